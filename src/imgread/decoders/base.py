"""The decoder contract: :class:`Decoder`, the outputs and their crop geometry, format sniffing,
the errors a decoder raises, and the helpers every library's module shares (its source's bytes,
the format check, the shared resize, the shape check of ``decode_into``), plus :func:`checksum`.

A decoder module (``pillow``, ``opencv``, ``simplejpeg``, ``turbojpeg``, or one outside the
package, docs/adding-a-decoder.md) builds its :class:`Decoder` objects from these; the registry
(``imgread.decoders.registry``) collects them. Nothing here imports an image library at module
level: Pillow and OpenCV are imported on first use.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from imgread.errors import ImageDecodeError, UserError, VerificationError

OUTPUTS = ("full", "crop224")
FORMATS = ("jpeg", "png", "webp", "avif")
UNKNOWN = "unknown"  # what format_of says of anything else
RESIZE_SHORTER = 256
CROP = 224
RESIZE_NAME = f"cv2.resize(INTER_AREA) of the shorter side to {RESIZE_SHORTER}, centre crop {CROP}"
JPEG_ONLY = frozenset({"jpeg"})
SNIFF_BYTES = 64  # what format_of reads of a file


class DecoderUnavailable(UserError):
    """The decoder's library is not installed here; the message says what to install."""


class UnsupportedFormatError(ImageDecodeError):
    """A decoder was given a format it does not declare (``Decoder.formats``)."""

    def __init__(self, message: str, fmt: str):
        super().__init__(message)
        self.fmt = fmt

    def __reduce__(self):  # back from a pool's worker process whole (args is the message only)
        return (type(self), (str(self), self.fmt))


# --------------------------------------------------------------------------- outputs


def cv2_single_threaded():
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


def resize_shorter(rgb: np.ndarray) -> np.ndarray:
    """The shorter side to 256 (INTER_AREA), the aspect ratio kept: the crop's source."""
    h, w = rgb.shape[:2]
    tw, th = resize_target(w, h)
    if (tw, th) == (w, h):
        return rgb
    cv2 = cv2_single_threaded()
    return cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)


def resize_crop(rgb: np.ndarray) -> np.ndarray:
    """The one resize of every decoder: shorter side to 256 (INTER_AREA), centre crop 224."""
    rgb = resize_shorter(rgb)
    top, left = (rgb.shape[0] - CROP) // 2, (rgb.shape[1] - CROP) // 2
    return np.ascontiguousarray(rgb[top : top + CROP, left : left + CROP])


def finish(rgb: np.ndarray, output: str) -> np.ndarray:
    """A decoded array as ``output``: as it is (``full``) or through :func:`resize_crop`."""
    return rgb if output == "full" else resize_crop(rgb)


def source_bytes(src: str | bytes) -> bytes:
    """The file's bytes: ``src`` itself where it is bytes, else the file at that path read."""
    if isinstance(src, bytes | bytearray | memoryview):
        return bytes(src)
    with open(src, "rb") as fh:
        return fh.read()


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the file's header (Pillow parses only the header here)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


def reduction(width: int, height: int, factors=(8, 4, 2)) -> int:
    """The largest DCT reduction whose output still covers the resize target."""
    tw, th = resize_target(width, height)
    for f in factors:
        if math.ceil(width / f) >= tw and math.ceil(height / f) >= th:
            return f
    return 1


# --------------------------------------------------------------------------- formats


def sniff(head: bytes) -> str:
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
        return sniff(bytes(memoryview(data_or_path)[:SNIFF_BYTES]))
    with open(data_or_path, "rb") as fh:
        return sniff(fh.read(SNIFF_BYTES))


def require_format(fmt: str, formats: frozenset[str]) -> None:
    """UnsupportedFormatError where ``fmt`` is not one of the decoder's ``formats`` (the
    :class:`Decoder` names the file, the decoder and what it decodes)."""
    if fmt not in formats:
        raise UnsupportedFormatError(fmt, fmt)


def jpeg_only() -> frozenset[str]:
    """The ``formats_fn`` of a decoder of JPEG only."""
    return JPEG_ONLY


# --------------------------------------------------------------------------- into a given array


def expect_shape(shape, out: np.ndarray) -> None:
    """VerificationError where the decoded ``shape`` is not ``out``'s."""
    if tuple(shape) != out.shape:
        raise VerificationError(f"decoded {tuple(shape)}, expected {out.shape}")


def copy_unless_written(result: np.ndarray, out: np.ndarray) -> None:
    """OpenCV writes into ``dst`` only when it fits; copy where it did not."""
    if not np.shares_memory(result, out):
        out[...] = result


def checksum(rgb: np.ndarray) -> int:
    """CRC-32 of the array's bytes (C order): equal arrays, equal checksums."""
    import zlib

    return zlib.crc32(np.ascontiguousarray(rgb).data)


# --------------------------------------------------------------------------- the contract


def _where(src) -> str:
    return src if isinstance(src, str) else f"<{len(src)} bytes>"


@dataclass(frozen=True)
class Decoder:
    """One decoder: ``decode(path_or_bytes, output)`` -> H x W x 3 uint8 RGB.

    ``formats`` (what it decodes here) comes from ``formats_fn`` on first use (it asks the
    installed Pillow or OpenCV); without one, ``jpeg_only`` says: {"jpeg"} or {"jpeg", "png"}.
    ``missing()`` is None where the decoder can run here, else one line saying why not and
    what to install (``missing_fn``; without one, whether its library imports).
    ``reserve_fn(pixels)``, where its ``into_fn`` uses scratch memory, reserves it before the
    clock for images of up to that many pixels (:func:`~imgread.decoders.registry.reserve`)."""

    name: str
    decode_fn: Callable[[str | bytes, str], np.ndarray]
    version_fn: Callable[[], str]
    jpeg_only: bool
    description: str
    count_fn: Callable[[str | bytes], int] | None = None
    into_fn: Callable[[str | bytes, np.ndarray], None] | None = None
    formats_fn: Callable[[], frozenset[str]] | None = None
    missing_fn: Callable[[], str | None] | None = None
    reserve_fn: Callable[[int], None] | None = None

    @cached_property
    def formats(self) -> frozenset[str]:
        """The formats of FORMATS this decoder decodes with the libraries installed here."""
        if self.formats_fn is not None:
            return frozenset(self.formats_fn())
        return JPEG_ONLY if self.jpeg_only else frozenset({"jpeg", "png"})

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
            expect_shape(rgb.shape, out)
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


def make_decoder(
    name: str,
    decode_fn: Callable[[str | bytes, str], np.ndarray],
    version_fn: Callable[[], str],
    formats_fn: Callable[[], frozenset[str]],
    description: str,
    count_fn: Callable[[str | bytes], int] | None = None,
    into_fn: Callable[[str | bytes, np.ndarray], None] | None = None,
    missing_fn: Callable[[], str | None] | None = None,
    reserve_fn: Callable[[int], None] | None = None,
) -> Decoder:
    """A :class:`Decoder`; ``formats_fn()`` -> the FORMATS it decodes here (:func:`jpeg_only`
    for a JPEG decoder). What a decoder module calls for each decoder it offers."""
    return Decoder(
        name,
        decode_fn,
        version_fn,
        formats_fn is jpeg_only,
        description,
        count_fn,
        into_fn,
        formats_fn,
        missing_fn,
        reserve_fn,
    )
