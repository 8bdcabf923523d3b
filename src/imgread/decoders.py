"""The decoder registry: name -> (path or bytes, output) -> H x W x 3 ``uint8`` RGB array.

Every decoder returns the stored pixel grid: EXIF orientation is *not* applied by any of them
(OpenCV, which would apply it, is told ``IMREAD_IGNORE_ORIENTATION``), so all four return the
same shape for the same file and a pipeline that needs upright images pays the same transpose
whichever it uses.

Outputs:
- ``full``: the image as decoded;
- ``crop224``: the ImageNet evaluation transform, shorter side resized to 256 then a centre crop
  of 224 x 224. The resize is one implementation for every decoder, :func:`resize_crop`
  (OpenCV ``cv2.resize`` with ``INTER_AREA``); decoders that can decode at a reduced DCT scale
  (``pillow-draft``, ``opencv``, ``simplejpeg``) first pick the smallest scale whose output
  still covers 256 on the shorter side, so the same resize then has less to do.

OpenCV runs single-threaded here (``cv2.setNumThreads(1)``), so that every decoder's
sequential rate is a one-core rate and a pool of N workers uses N cores.

``decode_into`` writes a full-size decode into a caller's array (a shared-memory slot) with at
most one copy and no buffer allocated per image: simplejpeg decodes straight into it, OpenCV's
BGR->RGB conversion writes it, Pillow decodes into a per-thread scratch image that the one
RGBX->RGB pack writes from.

Adding a decoder is one :func:`_register` call.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from imgread import allocator
from imgread.errors import ImageDecodeError, VerificationError

OUTPUTS = ("full", "crop224")
RESIZE_SHORTER = 256
CROP = 224
RESIZE_NAME = f"cv2.resize(INTER_AREA) of the shorter side to {RESIZE_SHORTER}, centre crop {CROP}"


def _cv2():
    """OpenCV, limited to one thread: its own thread pool would make the "sequential" decode
    (and the shared resize) use every core and oversubscribe each pool worker. DataLoader
    users do the same (``cv2.setNumThreads``) in their workers."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return cv2


def output_shape(width: int, height: int, output: str) -> tuple[int, int, int]:
    """The (H, W, 3) shape a decoder returns for a ``width`` x ``height`` image."""
    if output == "full":
        return (height, width, 3)
    if output == "crop224":
        return (CROP, CROP, 3)
    raise ValueError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")


def resize_target(width: int, height: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to 256, keeping the aspect ratio."""
    scale = RESIZE_SHORTER / min(width, height)
    return max(RESIZE_SHORTER, round(width * scale)), max(RESIZE_SHORTER, round(height * scale))


def resize_crop(rgb: np.ndarray) -> np.ndarray:
    """The one resize of every decoder: shorter side to 256 (INTER_AREA), centre crop 224."""
    cv2 = _cv2()

    h, w = rgb.shape[:2]
    tw, th = resize_target(w, h)
    if (tw, th) != (w, h):
        rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    top, left = (th - CROP) // 2, (tw - CROP) // 2
    return np.ascontiguousarray(rgb[top : top + CROP, left : left + CROP])


def _finish(rgb: np.ndarray, output: str) -> np.ndarray:
    return rgb if output == "full" else resize_crop(rgb)


def _bytes(src: str | bytes) -> bytes:
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    with open(src, "rb") as fh:
        return fh.read()


def _header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the file's header (Pillow parses only the header here)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _reduction(width: int, height: int, factors=(8, 4, 2)) -> int:
    """The largest DCT reduction whose output still covers the resize target."""
    tw, th = resize_target(width, height)
    for f in factors:
        if math.ceil(width / f) >= tw and math.ceil(height / f) >= th:
            return f
    return 1


# --------------------------------------------------------------------------- the decoders


def _pillow(src, output):
    from PIL import Image

    with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as img:
        return _finish(np.asarray(img.convert("RGB")), output)


def _pillow_count(src) -> int:
    """The study's decode: open + convert('RGB'), the image discarded, its pixel count kept."""
    from PIL import Image

    with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as img:
        rgb = img.convert("RGB")
        return rgb.width * rgb.height


def _pillow_draft(src, output):
    from PIL import Image

    with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as img:
        if output != "full":
            # draft() picks the largest DCT scale (1/2, 1/4, 1/8) whose size still covers this.
            img.draft("RGB", resize_target(*img.size))
        return _finish(np.asarray(img.convert("RGB")), output)


def _opencv(src, output):
    cv2 = _cv2()

    data = _bytes(src)
    flags = cv2.IMREAD_IGNORE_ORIENTATION
    if output == "full":
        flags |= cv2.IMREAD_COLOR
    else:
        reduced = {
            1: cv2.IMREAD_COLOR,
            2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8,
        }
        flags |= reduced[_reduction(*_header_size(data))]
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the data")
    return _finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), output)


def _simplejpeg(src, output):
    import simplejpeg

    data = _bytes(src)
    if not simplejpeg.is_jpeg(data):
        raise ValueError("not a JPEG file (simplejpeg decodes JPEG only)")
    if output == "full":
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    tw, th = resize_target(*_header_size(data))
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=tw, min_height=th)
    return _finish(rgb, output)


# --------------------------------------------------------------------------- into a given array

_SCRATCH = threading.local()  # per thread: Pillow's reused RGBX image memory


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A view of ``shape`` on this thread's scratch memory, which only grows: allocated and
    faulted in once (:func:`reserve`), then reused for every image."""
    need = int(np.prod(shape))
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < need:
        buf = _SCRATCH.buf = np.empty(need, np.uint8)
        buf.fill(0)  # fault its pages in now
    return buf[:need].reshape(shape)


def reserve(name: str, output: str, shapes) -> None:
    """Before the clock: this thread's scratch memory for the largest of ``shapes`` (H, W, 3)
    where the decoder's ``decode_into`` uses it, so that no image of a trial allocates it."""
    largest = max((h * w for h, w, _ in shapes), default=0)
    if output == "full" and get_decoder(name).into_fn is _pillow_into and largest:
        _scratch((largest, 4))


def _expect(shape, out: np.ndarray) -> None:
    if tuple(shape) != out.shape:
        raise VerificationError(f"decoded {tuple(shape)}, expected {out.shape}")


def _written(result: np.ndarray, out: np.ndarray) -> None:
    """OpenCV writes into ``dst`` only when it fits; copy where it did not."""
    if not np.shares_memory(result, out):
        out[...] = result


def _pillow_into(src, out) -> None:
    from PIL import Image

    cv2 = _cv2()
    with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as img:
        _expect((img.height, img.width, 3), out)
        if img.format == "JPEG" and img.mode == "RGB" and len(img.tile) == 1:
            # Decode into our own (reused) memory: Pillow stores RGB as 4 bytes a pixel; the
            # one copy is the pack to 3 bytes, into ``out``. (Image.core.map_buffer is what
            # Image.frombuffer and ImageFile.load's own memory mapping use.)
            rgbx = _scratch((img.height, img.width, 4))
            img.im = Image.core.map_buffer(rgbx, img.size, "raw", 0, ("RGB", 0, 1))
            img.load()
            _written(cv2.cvtColor(rgbx, cv2.COLOR_RGBA2RGB, dst=out), out)
            return
        out[...] = np.asarray(img.convert("RGB"))  # other modes and formats: the plain way


def _opencv_into(src, out) -> None:
    cv2 = _cv2()
    flags = cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR
    bgr = cv2.imdecode(np.frombuffer(_bytes(src), np.uint8), flags)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the data")
    _expect(bgr.shape, out)
    _written(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out), out)


def _simplejpeg_into(src, out) -> None:
    import simplejpeg

    data = _bytes(src)
    if not simplejpeg.is_jpeg(data):
        raise ValueError("not a JPEG file (simplejpeg decodes JPEG only)")
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    _expect((height, width, 3), out)
    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)


def _pillow_version():
    import PIL
    from PIL import features

    return f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo') or 'no'}"


def _opencv_version():
    import cv2

    return f"opencv {cv2.__version__}"


def _simplejpeg_version():
    import simplejpeg

    return f"simplejpeg {simplejpeg.__version__}"


@dataclass(frozen=True)
class Decoder:
    """One decoder: ``decode(path_or_bytes, output)`` -> H x W x 3 uint8 RGB."""

    name: str
    decode_fn: Callable[[str | bytes, str], np.ndarray]
    version_fn: Callable[[], str]
    jpeg_only: bool
    description: str
    count_fn: Callable[[str | bytes], int] | None = None
    into_fn: Callable[[str | bytes, np.ndarray], None] | None = None

    def decode(self, src: str | bytes, output: str = "full") -> np.ndarray:
        """Decode ``src`` (a path, or the file's bytes); ImageDecodeError names file and decoder."""
        try:
            rgb = self.decode_fn(src, output)
        except Exception as exc:  # each library raises its own types for bad data
            where = src if isinstance(src, str) else f"<{len(src)} bytes>"
            raise ImageDecodeError(
                f"{where}: decoder {self.name}: {type(exc).__name__}: {exc}"
            ) from None
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ImageDecodeError(
                f"{src if isinstance(src, str) else 'bytes'}: decoder {self.name} returned "
                f"{rgb.dtype} {rgb.shape}, not H x W x 3 uint8"
            )
        return rgb

    def count(self, src: str | bytes, output: str = "full") -> int:
        """Decode and return only the pixel count (delivery ``discard``).

        Pillow at full size does the study's work (a decoded RGB ``Image``, no numpy array);
        every other case decodes to the array and counts it.
        """
        if self.count_fn is not None and output == "full":
            try:
                return self.count_fn(src)
            except Exception as exc:
                raise ImageDecodeError(
                    f"{src}: decoder {self.name}: {type(exc).__name__}: {exc}"
                ) from None
        rgb = self.decode(src, output)
        return rgb.shape[0] * rgb.shape[1]

    def decode_into(self, src: str | bytes, output: str, out: np.ndarray) -> None:
        """Decode ``src`` into ``out`` (C-contiguous H x W x 3 uint8): at full size with at
        most one copy and no array allocated per image where the decoder allows; otherwise
        (the 224 crop, a decoder without the way) its array copied in. VerificationError where
        the image's shape is not ``out``'s, ImageDecodeError where the data is bad."""
        if self.into_fn is None or output != "full":
            rgb = self.decode(src, output)
            _expect(rgb.shape, out)
            out[...] = rgb
            return
        try:
            self.into_fn(src, out)
        except VerificationError as exc:
            where = src if isinstance(src, str) else f"<{len(src)} bytes>"
            raise VerificationError(f"{where}: decoder {self.name}: {exc}") from None
        except Exception as exc:  # each library raises its own types for bad data
            where = src if isinstance(src, str) else f"<{len(src)} bytes>"
            raise ImageDecodeError(
                f"{where}: decoder {self.name}: {type(exc).__name__}: {exc}"
            ) from None

    def version(self) -> str:
        """The library (and codec) version this decoder runs."""
        try:
            return self.version_fn()
        except ImportError as exc:
            return f"not installed ({exc})"


DECODERS: dict[str, Decoder] = {}


def _register(name, decode_fn, version_fn, jpeg_only, description, count_fn=None, into_fn=None):
    DECODERS[name] = Decoder(name, decode_fn, version_fn, jpeg_only, description, count_fn, into_fn)


_register(
    "pillow",
    _pillow,
    _pillow_version,
    False,
    "Image.open + convert('RGB') + np.asarray (the study's decoder)",
    _pillow_count,
    _pillow_into,
)
_register(
    "pillow-draft",
    _pillow_draft,
    _pillow_version,
    False,
    "Pillow with Image.draft() to the smallest DCT scale covering the output (= pillow at full)",
    _pillow_count,
    _pillow_into,
)
_register(
    "opencv",
    _opencv,
    _opencv_version,
    False,
    "cv2.imdecode from bytes + BGR->RGB; IMREAD_REDUCED_COLOR_{2,4,8} for a resized output",
    into_fn=_opencv_into,
)
_register(
    "simplejpeg",
    _simplejpeg,
    _simplejpeg_version,
    True,
    "simplejpeg.decode_jpeg(colorspace='RGB'), min_width/min_height for a resized output",
    into_fn=_simplejpeg_into,
)


def get_decoder(name: str) -> Decoder:
    """The registered decoder; ValueError naming the allowed names otherwise."""
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None


@cache
def versions() -> dict[str, str]:
    """{decoder name: version string} for every registered decoder."""
    return {name: d.version() for name, d in DECODERS.items()}


@cache
def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buf, format="JPEG")
    return buf.getvalue()


def warm_up(name: str, output: str, allocator_name: str = "default") -> None:
    """Give this process the allocator (imgread.allocator), import the decoder's libraries and
    run each code path once on a tiny in-memory JPEG, so that none of it lands in a timed
    region (run in every worker before the clock starts)."""
    allocator.apply(allocator_name)
    d = get_decoder(name)
    d.decode(_tiny_jpeg(), output)
    if d.count_fn is not None:
        d.count_fn(_tiny_jpeg())
    if d.into_fn is not None:
        d.decode_into(_tiny_jpeg(), "full", np.empty((48, 64, 3), np.uint8))


def checksum(rgb: np.ndarray) -> int:
    """CRC-32 of the array's bytes (C order): equal arrays, equal checksums."""
    import zlib

    return zlib.crc32(np.ascontiguousarray(rgb).data)
