"""The TurboJPEG decoder, ``turbojpeg``: PyTurboJPEG (a ctypes wrapper of the system's
libturbojpeg) decoding a JPEG to RGB with the accurate IDCT (:data:`TJ_FLAGS`), the 224 crop at
the smallest scaling factor (M/8) covering it, ``decode_into`` straight into the caller's array,
strict on corrupt data (a library warning raises), CMYK/YCCK converted as Pillow does.

PyTurboJPEG or libturbojpeg may be absent: the decoder stays registered and ``missing()`` says
what to install (docs/decoders.md, "turbojpeg").
"""

from __future__ import annotations

import os
import re
import threading
from functools import cache

import numpy as np

from imgread.decoders.base import (
    JPEG_ONLY,
    SNIFF_BYTES,
    DecoderUnavailable,
    expect_shape,
    finish,
    jpeg_only,
    make_decoder,
    require_format,
    resize_target,
    sniff,
    source_bytes,
)

# PyTurboJPEG 2.x needs libjpeg-turbo 3 (the tj3* API); 1.8.3 is the newest release on the
# TurboJPEG 2 API that Debian 12's libturbojpeg0 (2.1.5) has. pyproject.toml pins it.
TURBOJPEG_PIN = "PyTurboJPEG==1.8.3"
TURBOJPEG_SYSTEM = "libturbojpeg0 (apt install libturbojpeg0; make system-deps does it as root)"

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
    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), JPEG_ONLY)
    if output == "full":
        return _tj_decode(tj, data)
    width, height = tj.decode_header(data)[:2]
    return finish(_tj_decode(tj, data, _tj_scaling(tj, width, height)), output)


def _turbojpeg_into(src, out) -> None:
    tj = _turbojpeg()
    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), JPEG_ONLY)
    # The library writes width * 3 bytes a row from out's first byte: only into a C-contiguous,
    # writable array (anything else is decoded to a new array and copied in).
    direct = out.flags.c_contiguous and out.flags.writeable
    rgb = _tj_decode(tj, data, dst=out if direct else None)
    if rgb is not out:
        expect_shape(rgb.shape, out)
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


TURBOJPEG = make_decoder(
    "turbojpeg",
    _turbojpeg_decode,
    _turbojpeg_version,
    jpeg_only,
    "PyTurboJPEG (libturbojpeg) decode to RGB, accurate IDCT; the smallest scaling factor"
    " (M/8) covering the output for a resized one",
    into_fn=_turbojpeg_into,
    missing_fn=_turbojpeg_missing,
)
