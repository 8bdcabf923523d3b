"""The decoder registry: name -> (path or bytes, output) -> H x W x 3 ``uint8`` RGB array.

Every decoder returns the stored pixel grid: EXIF orientation is *not* applied by any of them
(OpenCV, which would apply it, is told ``IMREAD_IGNORE_ORIENTATION``), so all of them return the
same shape for the same file and a pipeline that needs upright images pays the same transpose
whichever it uses.

Outputs:
- ``full``: the image as decoded;
- ``crop224``: the ImageNet evaluation transform, shorter side resized to 256 then a centre crop
  of 224 x 224. The resize is one implementation for every decoder, :func:`resize_crop`
  (OpenCV ``cv2.resize`` with ``INTER_AREA``); decoders that can decode a JPEG at a reduced DCT
  scale (``pillow-draft``, ``opencv``, ``simplejpeg``, ``turbojpeg``) first pick the smallest
  scale whose output still covers 256 on the shorter side, so the same resize then has less to
  do. Other formats are decoded at full size, then resized the same way.

Formats: every decoder declares the formats it decodes (``Decoder.formats``, a subset of
:data:`FORMATS`, what the installed libraries can do: Pillow's and OpenCV's AVIF and WebP
depend on their build). :func:`format_of` sniffs a file's format from its first bytes and
:func:`can_decode` says whether a decoder takes it; a decoder given another format raises
:class:`UnsupportedFormatError` (an ImageDecodeError naming the decoder and the format).

Availability: a decoder whose library is not installed here (``turbojpeg`` without the system's
libturbojpeg) stays registered; ``Decoder.missing()`` says why in one line, :func:`warm_up` and
every decode raise :class:`DecoderUnavailable` (a UserError) with that line.

OpenCV runs single-threaded here (``cv2.setNumThreads(1)``), so that every decoder's
sequential rate is a one-core rate and a pool of N workers uses N cores.

``decode_into`` writes a full-size decode into a caller's array (a shared-memory slot) with at
most one copy and no buffer allocated per image: simplejpeg and turbojpeg decode straight into
it, OpenCV's BGR->RGB conversion writes it, Pillow decodes into a per-thread scratch image that
the one RGBX->RGB pack writes from.

Adding a decoder is one :func:`_register` call (docs/decoders.md).
"""

from __future__ import annotations

import io
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from imgread.decoders import allocator
from imgread.errors import ImageDecodeError, UserError, VerificationError

OUTPUTS = ("full", "crop224")
FORMATS = ("jpeg", "png", "webp", "avif")
UNKNOWN = "unknown"  # what format_of says of anything else
RESIZE_SHORTER = 256
CROP = 224
RESIZE_NAME = f"cv2.resize(INTER_AREA) of the shorter side to {RESIZE_SHORTER}, centre crop {CROP}"

# PyTurboJPEG 2.x needs libjpeg-turbo 3 (the tj3* API); 1.8.3 is the newest release on the
# TurboJPEG 2 API that Debian 12's libturbojpeg0 (2.1.5) has. pyproject.toml pins it.
TURBOJPEG_PIN = "PyTurboJPEG==1.8.3"
TURBOJPEG_SYSTEM = "libturbojpeg0 (apt install libturbojpeg0; make system-deps does it as root)"


class DecoderUnavailable(UserError):
    """The decoder's library is not installed here; the message says what to install."""


class UnsupportedFormatError(ImageDecodeError):
    """A decoder was given a format it does not declare (``Decoder.formats``)."""

    def __init__(self, message: str, fmt: str):
        super().__init__(message)
        self.fmt = fmt

    def __reduce__(self):  # back from a pool's worker process whole (args is the message only)
        return (type(self), (str(self), self.fmt))


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


# --------------------------------------------------------------------------- formats

_SNIFF_BYTES = 64


def _sniff(head: bytes) -> str:
    """The format of data starting with ``head`` (its first bytes): one of FORMATS or UNKNOWN."""
    if head[:2] == b"\xff\xd8":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        # the ftyp box: major brand, minor version, then compatible brands, 4 bytes each
        size = int.from_bytes(head[:4], "big")
        box = head[8 : min(max(size, 16), len(head))]
        brands = {box[i : i + 4] for i in range(0, len(box) - 3, 4) if i != 4}
        if brands & {b"avif", b"avis"}:
            return "avif"
    return UNKNOWN


def format_of(data_or_path: str | os.PathLike | bytes | bytearray | memoryview) -> str:
    """The image format of the bytes (or of the file at the path), from its first bytes:
    ``"jpeg"`` (FF D8), ``"png"`` (89 50 4E 47 ...), ``"webp"`` (RIFF....WEBP), ``"avif"`` (an
    ``ftyp`` box with the avif/avis brand), else ``"unknown"`` (:data:`UNKNOWN`). A path reads
    only the first 64 bytes; OSError where it cannot be read."""
    if isinstance(data_or_path, bytes | bytearray | memoryview):
        return _sniff(bytes(memoryview(data_or_path)[:_SNIFF_BYTES]))
    with open(data_or_path, "rb") as fh:
        return _sniff(fh.read(_SNIFF_BYTES))


def _require(fmt: str, formats: frozenset[str]) -> None:
    if fmt not in formats:
        raise UnsupportedFormatError(fmt, fmt)


_PIL_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif"}


def _pil_format(img) -> str:
    return _PIL_FORMATS.get(img.format or "", (img.format or UNKNOWN).lower())


@cache
def _pillow_formats() -> frozenset[str]:
    """What this Pillow decodes: JPEG (libjpeg), PNG (zlib), WebP and AVIF where built in
    (Pillow >= 11.2 has AVIF in its wheels) or, for AVIF, a plugin registered it."""
    from PIL import Image, features

    def module(name: str) -> bool:
        try:
            return bool(features.check_module(name))
        except (ValueError, ImportError):  # a Pillow that does not know the feature
            return False

    Image.init()
    have = {
        "jpeg": features.check_codec("jpg"),
        "png": features.check_codec("zlib"),
        "webp": module("webp"),
        "avif": module("avif") or "AVIF" in Image.OPEN,
    }
    return frozenset(f for f in FORMATS if have[f])


@cache
def _opencv_formats() -> frozenset[str]:
    """What this OpenCV build decodes, from its build information ("Media I/O": JPEG, PNG,
    WEBP, AVIF; a codec left out of the build is missing or says NO)."""
    import cv2

    info = cv2.getBuildInformation()
    media = info.split("Media I/O", 1)[-1].split("Video I/O", 1)[0]
    found = dict(re.findall(r"^\s*(JPEG|PNG|WEBP|AVIF):\s*(.*?)\s*$", media, re.M))
    return frozenset(f for f in FORMATS if found.get(f.upper(), "NO").upper() not in ("", "NO"))


_JPEG_ONLY = frozenset({"jpeg"})


def can_decode(name: str, fmt: str) -> bool:
    """Whether decoder ``name`` decodes format ``fmt`` (one of FORMATS, or "unknown": False)
    here. Only the formats: whether its library is installed is ``Decoder.missing()``.
    ValueError for an unknown decoder or format."""
    d = get_decoder(name)
    if fmt != UNKNOWN and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt in d.formats


# --------------------------------------------------------------------------- the decoders


def _pillow_open(src):
    from PIL import Image

    img = Image.open(src if isinstance(src, str) else io.BytesIO(src))
    try:
        _require(_pil_format(img), _pillow_formats())
    except UnsupportedFormatError:
        img.close()
        raise
    return img


def _pillow(src, output):
    with _pillow_open(src) as img:
        return _finish(np.asarray(img.convert("RGB")), output)


def _pillow_count(src) -> int:
    """The study's decode: open + convert('RGB'), the image discarded, its pixel count kept."""
    with _pillow_open(src) as img:
        rgb = img.convert("RGB")
        return rgb.width * rgb.height


def _pillow_draft(src, output):
    with _pillow_open(src) as img:
        if output != "full" and img.format == "JPEG":
            # draft() picks the largest DCT scale (1/2, 1/4, 1/8) whose size still covers this.
            img.draft("RGB", resize_target(*img.size))
        return _finish(np.asarray(img.convert("RGB")), output)


def _opencv_imdecode(data: bytes, flags: int) -> np.ndarray:
    cv2 = _cv2()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the data")
    return bgr


def _opencv(src, output):
    cv2 = _cv2()

    data = _bytes(src)
    fmt = _sniff(data[:_SNIFF_BYTES])
    _require(fmt, _opencv_formats())
    flags = cv2.IMREAD_COLOR
    if output != "full" and fmt == "jpeg":  # other formats: full size, then resize_crop
        reduced = {
            1: cv2.IMREAD_COLOR,
            2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8,
        }
        flags = reduced[_reduction(*_header_size(data))]
    bgr = _opencv_imdecode(data, flags)
    return _finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), output)


def _simplejpeg(src, output):
    import simplejpeg

    data = _bytes(src)
    _require(_sniff(data[:_SNIFF_BYTES]), _JPEG_ONLY)
    if output == "full":
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    tw, th = resize_target(*_header_size(data))
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=tw, min_height=th)
    return _finish(rgb, output)


# --------------------------------------------------------------------------- turbojpeg

# One TurboJPEG object per process, shared by its threads: in PyTurboJPEG 1.8.3 the object holds
# only the library's function pointers and its scaling factors; every decode/decode_header call
# creates and destroys its own tj handle (tjInitDecompress ... tjDestroy), so nothing is shared
# between concurrent calls, and ctypes releases the GIL while the library decodes.
_TJ = None
_TJ_LOCK = threading.Lock()
TJ_FLAGS = 0  # accurate (islow) IDCT, fancy upsampling: libjpeg's defaults, Pillow's, tjbench's


def _load_turbojpeg():
    """A TurboJPEG whose library errors *and* warnings raise OSError (PyTurboJPEG only warns on
    a warning, e.g. a truncated file, and returns the partly decoded image; simplejpeg and
    Pillow raise). DecoderUnavailable, with what to install, where it cannot load."""
    try:
        import turbojpeg
    except ImportError as exc:
        raise DecoderUnavailable(
            f"decoder turbojpeg is unavailable: PyTurboJPEG is not installed ({exc}); "
            f"pip install {TURBOJPEG_PIN}"
        ) from None

    class StrictTurboJPEG(turbojpeg.TurboJPEG):
        # PyTurboJPEG's private error report, called after every failed tj call (the name is
        # its mangled name; the version is pinned in pyproject.toml).
        def _TurboJPEG__report_error(self, handle):
            raise OSError(self._TurboJPEG__get_error_string(handle))

    try:
        return StrictTurboJPEG()
    except (OSError, RuntimeError) as exc:  # no libturbojpeg, or one PyTurboJPEG cannot use
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "3.0" in first:  # PyTurboJPEG 2.x on a libjpeg-turbo 2.x
            hint = f"this libjpeg-turbo needs {TURBOJPEG_PIN} (pip install {TURBOJPEG_PIN})"
        else:
            hint = f"install the TurboJPEG library, {TURBOJPEG_SYSTEM}"
        raise DecoderUnavailable(
            f"decoder turbojpeg is unavailable: {first.rstrip('.')}; {hint}"
        ) from None


def _turbojpeg():
    """This process's TurboJPEG, loaded on first use (DecoderUnavailable where it cannot be)."""
    global _TJ
    tj = _TJ
    if tj is None:
        with _TJ_LOCK:
            if _TJ is None:
                _TJ = _load_turbojpeg()
            tj = _TJ
    return tj


def _turbojpeg_missing() -> str | None:
    try:
        _turbojpeg()
    except DecoderUnavailable as exc:
        return str(exc)
    return None


@cache
def _tj_scalings(factors: frozenset) -> tuple[tuple[int, int], ...]:
    """The library's scaling factors up to 1/1, smallest first."""
    return tuple(sorted((f for f in factors if f[0] <= f[1]), key=lambda f: f[0] / f[1]))


def _tj_scaling(tj, width: int, height: int) -> tuple[int, int] | None:
    """The smallest scaling factor (M/8: 1/8, 1/4, 3/8, 1/2, ...) whose output still covers
    the resize target (None: full size)."""
    tw, th = resize_target(width, height)
    for num, den in _tj_scalings(tj.scaling_factors):
        if (width * num + den - 1) // den >= tw and (height * num + den - 1) // den >= th:
            return None if num == den else (num, den)
    return None


def _cmyk_to_rgb(cmyk: np.ndarray, adobe: bool) -> np.ndarray:
    """Pillow's CMYK -> RGB (R = (255 - C) * (255 - K) / 255, rounded as Pillow does); Adobe
    JPEGs store the ink inverted (Pillow's rawmode CMYK;I)."""
    c = cmyk.astype(np.uint32)
    if not adobe:
        c = 255 - c
    t = c[..., :3] * c[..., 3:4] + 128
    return (((t >> 8) + t) >> 8).astype(np.uint8)


def _tj_decode(tj, data: bytes, scaling=None, dst=None) -> np.ndarray:
    """RGB, into ``dst`` where it is a C-contiguous array of the decoded shape (PyTurboJPEG
    checks the shape and dtype, and allocates otherwise); a CMYK/YCCK JPEG, which libjpeg does
    not convert to RGB, as CMYK converted here."""
    from turbojpeg import TJCS_CMYK, TJCS_YCCK, TJPF_CMYK, TJPF_RGB

    try:
        return tj.decode(data, TJPF_RGB, scaling, TJ_FLAGS, dst)
    except OSError:
        if tj.decode_header(data)[3] not in (TJCS_CMYK, TJCS_YCCK):
            raise
    adobe = re.search(rb"\xff\xee..Adobe", data[:65536], re.S) is not None
    return _cmyk_to_rgb(tj.decode(data, TJPF_CMYK, scaling, TJ_FLAGS), adobe)


def _turbojpeg_decode(src, output):
    tj = _turbojpeg()
    data = _bytes(src)
    _require(_sniff(data[:_SNIFF_BYTES]), _JPEG_ONLY)
    if output == "full":
        return _tj_decode(tj, data)
    width, height = tj.decode_header(data)[:2]
    return _finish(_tj_decode(tj, data, _tj_scaling(tj, width, height)), output)


def _turbojpeg_into(src, out) -> None:
    tj = _turbojpeg()
    data = _bytes(src)
    _require(_sniff(data[:_SNIFF_BYTES]), _JPEG_ONLY)
    # The library writes width * 3 bytes a row from out's first byte: only into a C-contiguous,
    # writable array (anything else is decoded to a new array and copied in).
    direct = out.flags.c_contiguous and out.flags.writeable
    rgb = _tj_decode(tj, data, dst=out if direct else None)
    if rgb is not out:
        _expect(rgb.shape, out)
        out[...] = rgb


def _turbojpeg_version():
    _turbojpeg()  # DecoderUnavailable, saying what to install, where it cannot load
    import turbojpeg

    return f"PyTurboJPEG {turbojpeg.__version__}, libjpeg-turbo {_libturbojpeg_version()}"


def _libturbojpeg_version() -> str:
    """The loaded libturbojpeg's version: the TurboJPEG 2 API has no call for it, but the
    library carries its "libjpeg-turbo version X" string (the file's name where it does not)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libturbojpeg" in line}
    except OSError:
        return "(version unknown)"
    for path in sorted(paths):
        try:
            with open(path, "rb") as fh:
                found = re.search(rb"libjpeg-turbo version ([0-9][0-9.]*)", fh.read())
        except OSError:
            continue
        return found.group(1).decode() if found else os.path.basename(path)
    return "(version unknown)"


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
    with _pillow_open(src) as img:
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
    data = _bytes(src)
    _require(_sniff(data[:_SNIFF_BYTES]), _opencv_formats())
    bgr = _opencv_imdecode(data, cv2.IMREAD_COLOR)
    _expect(bgr.shape, out)
    _written(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out), out)


def _simplejpeg_into(src, out) -> None:
    import simplejpeg

    data = _bytes(src)
    _require(_sniff(data[:_SNIFF_BYTES]), _JPEG_ONLY)
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


def _where(src) -> str:
    return src if isinstance(src, str) else f"<{len(src)} bytes>"


@dataclass(frozen=True)
class Decoder:
    """One decoder: ``decode(path_or_bytes, output)`` -> H x W x 3 uint8 RGB.

    ``formats`` (what it decodes here) comes from ``formats_fn`` on first use (it asks the
    installed Pillow or OpenCV); without one, ``jpeg_only`` says: {"jpeg"} or {"jpeg", "png"}.
    ``missing()`` is None where the decoder can run here, else one line saying why not and
    what to install (``missing_fn``; without one, whether its library imports)."""

    name: str
    decode_fn: Callable[[str | bytes, str], np.ndarray]
    version_fn: Callable[[], str]
    jpeg_only: bool
    description: str
    count_fn: Callable[[str | bytes], int] | None = None
    into_fn: Callable[[str | bytes, np.ndarray], None] | None = None
    formats_fn: Callable[[], frozenset[str]] | None = None
    missing_fn: Callable[[], str | None] | None = None

    @cached_property
    def formats(self) -> frozenset[str]:
        """The formats of FORMATS this decoder decodes with the libraries installed here."""
        if self.formats_fn is not None:
            return frozenset(self.formats_fn())
        return _JPEG_ONLY if self.jpeg_only else frozenset({"jpeg", "png"})

    def missing(self) -> str | None:
        """None where this decoder can run here; else one line: why not, what to install."""
        if self.missing_fn is not None:
            return self.missing_fn()
        try:
            self.version_fn()
        except ImportError as exc:
            return f"decoder {self.name} is unavailable: {exc}"
        return None

    @property
    def available(self) -> bool:
        """Whether this decoder's libraries are installed here (``missing()`` says why not)."""
        return self.missing() is None

    def _failed(self, src, exc: Exception) -> Exception:
        """The error a decoder's exception becomes: the missing library as it is (a UserError),
        a format it does not decode or bad data as an ImageDecodeError naming file and decoder."""
        if isinstance(exc, UserError | VerificationError):
            return exc
        if isinstance(exc, UnsupportedFormatError):
            what = "an unknown format" if exc.fmt == UNKNOWN else f"format {exc.fmt}"
            return UnsupportedFormatError(
                f"{_where(src)}: decoder {self.name}: {what} is not one it decodes "
                f"(it decodes {', '.join(f for f in FORMATS if f in self.formats)})",
                exc.fmt,
            )
        return ImageDecodeError(f"{_where(src)}: decoder {self.name}: {type(exc).__name__}: {exc}")

    def decode(self, src: str | bytes, output: str = "full") -> np.ndarray:
        """Decode ``src`` (a path, or the file's bytes); ImageDecodeError names file and decoder
        (UnsupportedFormatError for a format not in ``formats``), DecoderUnavailable where the
        decoder's library is not installed."""
        try:
            rgb = self.decode_fn(src, output)
        except Exception as exc:  # each library raises its own types for bad data
            raise self._failed(src, exc) from None
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
                raise self._failed(src, exc) from None
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
            raise VerificationError(f"{_where(src)}: decoder {self.name}: {exc}") from None
        except Exception as exc:  # each library raises its own types for bad data
            raise self._failed(src, exc) from None

    def version(self) -> str:
        """The library (and codec) version this decoder runs."""
        try:
            return self.version_fn()
        except ImportError as exc:
            return f"not installed ({exc})"
        except DecoderUnavailable as exc:
            return f"unavailable ({exc})"


DECODERS: dict[str, Decoder] = {}


def _register(
    name,
    decode_fn,
    version_fn,
    formats_fn,
    description,
    count_fn=None,
    into_fn=None,
    missing_fn=None,
):
    """Register a decoder; ``formats_fn()`` -> the FORMATS it decodes here."""
    jpeg_only = formats_fn is _jpeg_only
    DECODERS[name] = Decoder(
        name,
        decode_fn,
        version_fn,
        jpeg_only,
        description,
        count_fn,
        into_fn,
        formats_fn,
        missing_fn,
    )


def _jpeg_only() -> frozenset[str]:
    return _JPEG_ONLY


_register(
    "pillow",
    _pillow,
    _pillow_version,
    _pillow_formats,
    "Image.open + convert('RGB') + np.asarray (the study's decoder)",
    _pillow_count,
    _pillow_into,
)
_register(
    "pillow-draft",
    _pillow_draft,
    _pillow_version,
    _pillow_formats,
    "Pillow with Image.draft() to the smallest DCT scale covering the output (= pillow at full"
    " size, and for formats other than JPEG)",
    _pillow_count,
    _pillow_into,
)
_register(
    "opencv",
    _opencv,
    _opencv_version,
    _opencv_formats,
    "cv2.imdecode from bytes + BGR->RGB; IMREAD_REDUCED_COLOR_{2,4,8} for a resized JPEG",
    into_fn=_opencv_into,
)
_register(
    "simplejpeg",
    _simplejpeg,
    _simplejpeg_version,
    _jpeg_only,
    "simplejpeg.decode_jpeg(colorspace='RGB'), min_width/min_height for a resized output",
    into_fn=_simplejpeg_into,
)
_register(
    "turbojpeg",
    _turbojpeg_decode,
    _turbojpeg_version,
    _jpeg_only,
    "PyTurboJPEG (libturbojpeg) decode to RGB, accurate IDCT; the smallest scaling factor"
    " (M/8) covering the output for a resized one",
    into_fn=_turbojpeg_into,
    missing_fn=_turbojpeg_missing,
)


def get_decoder(name: str) -> Decoder:
    """The registered decoder; ValueError naming the allowed names otherwise."""
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None


def missing() -> dict[str, str]:
    """{decoder name: why it cannot run here} for every registered decoder that cannot."""
    return {name: why for name, d in DECODERS.items() if (why := d.missing()) is not None}


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
    """Give this process the allocator (imgread.decoders.allocator), import the decoder's libraries
    and run each code path once on a tiny in-memory JPEG, so that none of it lands in a timed
    region (run in every worker before the clock starts). DecoderUnavailable (a UserError
    saying what to install) where the decoder cannot run here."""
    allocator.apply(allocator_name)
    d = get_decoder(name)
    why = d.missing()
    if why is not None:
        raise DecoderUnavailable(why)
    d.decode(_tiny_jpeg(), output)
    if d.count_fn is not None:
        d.count_fn(_tiny_jpeg())
    if d.into_fn is not None:
        d.decode_into(_tiny_jpeg(), "full", np.empty((48, 64, 3), np.uint8))


def checksum(rgb: np.ndarray) -> int:
    """CRC-32 of the array's bytes (C order): equal arrays, equal checksums."""
    import zlib

    return zlib.crc32(np.ascontiguousarray(rgb).data)
