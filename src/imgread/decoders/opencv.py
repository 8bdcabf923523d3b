"""The OpenCV decoder, ``opencv``: ``cv2.imdecode`` from bytes, then BGR->RGB, with EXIF
orientation ignored (``IMREAD_IGNORE_ORIENTATION``) as every other decoder ignores it; a JPEG's
224 crop decoded at a reduced DCT scale (``IMREAD_REDUCED_COLOR_2/4/8``).

Formats: what this OpenCV build decodes (its "Media I/O" build information). Its
``decode_into`` lets the BGR->RGB conversion write the caller's array. OpenCV runs
single-threaded here (:func:`~imgread.decoders.base.cv2_single_threaded`).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from imgread.decoders.base import (
    FORMATS,
    SNIFF_BYTES,
    copy_unless_written,
    cv2_single_threaded,
    expect_shape,
    finish,
    header_size,
    make_decoder,
    reduction,
    require_format,
    sniff,
    source_bytes,
)


@cache
def _opencv_formats() -> frozenset[str]:
    """What this OpenCV build decodes, from its build information ("Media I/O": JPEG, PNG,
    WEBP, AVIF; a codec left out of the build is missing or says NO)."""
    import cv2

    info = cv2.getBuildInformation()
    media = info.split("Media I/O", 1)[-1].split("Video I/O", 1)[0]
    found = dict(re.findall(r"^\s*(JPEG|PNG|WEBP|AVIF):\s*(.*?)\s*$", media, re.M))
    return frozenset(f for f in FORMATS if found.get(f.upper(), "NO").upper() not in ("", "NO"))


def _opencv_imdecode(data: bytes, flags: int) -> np.ndarray:
    cv2 = cv2_single_threaded()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ValueError("cv2.imdecode could not decode the data")
    return bgr


def _opencv(src, output):
    cv2 = cv2_single_threaded()

    data = source_bytes(src)
    fmt = sniff(data[:SNIFF_BYTES])
    require_format(fmt, _opencv_formats())
    flags = cv2.IMREAD_COLOR
    if output != "full" and fmt == "jpeg":  # other formats: full size, then resize_crop
        reduced = {
            1: cv2.IMREAD_COLOR,
            2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8,
        }
        flags = reduced[reduction(*header_size(data))]
    bgr = _opencv_imdecode(data, flags)
    return finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), output)


def _opencv_into(src, out) -> None:
    cv2 = cv2_single_threaded()
    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), _opencv_formats())
    bgr = _opencv_imdecode(data, cv2.IMREAD_COLOR)
    expect_shape(bgr.shape, out)
    copy_unless_written(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out), out)


def _opencv_version():
    import cv2

    return f"opencv {cv2.__version__}"


OPENCV = make_decoder(
    "opencv",
    _opencv,
    _opencv_version,
    _opencv_formats,
    "cv2.imdecode from bytes + BGR->RGB; IMREAD_REDUCED_COLOR_{2,4,8} for a resized JPEG",
    into_fn=_opencv_into,
)
