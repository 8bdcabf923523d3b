"""The Pillow decoders: ``pillow`` (the study's decoder: ``Image.open`` + ``convert("RGB")``) and
``pillow-draft`` (the same with ``Image.draft`` to the smallest DCT scale covering the 224 crop).

Formats: what the installed Pillow decodes (JPEG, PNG; WebP and AVIF where built in). Their
``decode_into`` decodes a JPEG into a per-thread scratch RGBX image that the one RGBX->RGB pack
writes into the caller's array; their ``count`` is the study's decode with no numpy array.
"""

from __future__ import annotations

import io
import threading
from functools import cache

import numpy as np

from imgread.decoders.base import (
    FORMATS,
    UNKNOWN,
    UnsupportedFormatError,
    copy_unless_written,
    cv2_single_threaded,
    expect_shape,
    finish,
    make_decoder,
    require_format,
    resize_target,
)

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


def _pillow_open(src):
    from PIL import Image

    img = Image.open(src if isinstance(src, str) else io.BytesIO(src))
    try:
        require_format(_pil_format(img), _pillow_formats())
    except UnsupportedFormatError:
        img.close()
        raise
    return img


def _pillow(src, output):
    with _pillow_open(src) as img:
        return finish(np.asarray(img.convert("RGB")), output)


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
        return finish(np.asarray(img.convert("RGB")), output)


# --------------------------------------------------------------------------- into a given array

_SCRATCH = threading.local()  # per thread: Pillow's reused RGBX image memory


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A view of ``shape`` on this thread's scratch memory, which only grows: allocated and
    faulted in once (:func:`_pillow_reserve`), then reused for every image."""
    need = int(np.prod(shape))
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < need:
        buf = _SCRATCH.buf = np.empty(need, np.uint8)
        buf.fill(0)  # fault its pages in now
    return buf[:need].reshape(shape)


def _pillow_reserve(pixels: int) -> None:
    """This thread's scratch RGBX memory for images of up to ``pixels`` pixels."""
    _scratch((pixels, 4))


def _pillow_into(src, out) -> None:
    from PIL import Image

    cv2 = cv2_single_threaded()
    with _pillow_open(src) as img:
        expect_shape((img.height, img.width, 3), out)
        if img.format == "JPEG" and img.mode == "RGB" and len(img.tile) == 1:
            # Decode into our own (reused) memory: Pillow stores RGB as 4 bytes a pixel; the
            # one copy is the pack to 3 bytes, into ``out``. (Image.core.map_buffer is what
            # Image.frombuffer and ImageFile.load's own memory mapping use.)
            rgbx = _scratch((img.height, img.width, 4))
            img.im = Image.core.map_buffer(rgbx, img.size, "raw", 0, ("RGB", 0, 1))
            img.load()
            copy_unless_written(cv2.cvtColor(rgbx, cv2.COLOR_RGBA2RGB, dst=out), out)
            return
        out[...] = np.asarray(img.convert("RGB"))  # other modes and formats: the plain way


def _pillow_version():
    import PIL
    from PIL import features

    return f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo') or 'no'}"


PILLOW = make_decoder(
    "pillow",
    _pillow,
    _pillow_version,
    _pillow_formats,
    "Image.open + convert('RGB') + np.asarray (the study's decoder)",
    _pillow_count,
    _pillow_into,
    reserve_fn=_pillow_reserve,
)
PILLOW_DRAFT = make_decoder(
    "pillow-draft",
    _pillow_draft,
    _pillow_version,
    _pillow_formats,
    "Pillow with Image.draft() to the smallest DCT scale covering the output (= pillow at full"
    " size, and for formats other than JPEG)",
    _pillow_count,
    _pillow_into,
    reserve_fn=_pillow_reserve,
)
