"""The memory allocator a decode runs with: a measured setting (the decode grid key
``allocator``), applied in the trial's process and in every worker before the clock.

Why it is measured: decoding a 2016 x 1512 JPEG with Pillow holds two 12 MB buffers (the
decoded image and its ``convert("RGB")`` copy). glibc serves them from its heap once the first
has been freed (its mmap threshold follows the largest block freed) and gives the heap's top
back to the kernel when more than twice that threshold is free there: the two buffers, freed
together, just reach it. Whether they do depends on whether some unrelated small block was
allocated above them, that is on everything the process did before: here a bare interpreter
mapped afresh (and zeroed, about 6,000 minor faults) the first 25 of 100 images, one that had
imported numpy 38, numpy and OpenCV 63, the trial process (the whole package) all 100. There
is no "plain" heap state to restore; a decode time measured with the default allocator is the
time of a process in whatever state it is in, and its faults (imgread.instruments.page_faults) say
which.

- ``default``: nothing is set; the libraries' and the C library's own behaviour.
- ``tuned``: what the libraries offer to keep freed buffers for the next image:
  Pillow's block cache (``Image.core.set_blocks_max``, the setting ``PILLOW_BLOCKS_MAX`` makes
  at import) keeps up to :data:`PILLOW_BLOCKS_MAX` freed blocks of at most 16 MiB;
  glibc (``mallopt``; the ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` environment
  settings made at run time) serves every block from its heap (``M_MMAP_MAX`` 0: a 36 MB array
  of a 12-megapixel photo is above any mmap threshold glibc accepts) and keeps up to
  :data:`GLIBC_TRIM_THRESHOLD` free at the heap's top, which covers the buffers of numpy
  (simplejpeg's output), OpenCV (``cv::Mat``, which has no pool of its own on the CPU) and
  Pillow alike. simplejpeg can also decode into a caller's buffer (``buffer=``); the
  processes-shm variant uses that in both settings (imgread.decoders.Decoder.decode_into).
  Where the C library is not glibc (macOS, musl), ``tuned`` sets Pillow's cache only.

The default cannot be restored in a process once tuned (glibc's adaptive thresholds stay off
after any ``mallopt``): a trial runs in its own process, and :func:`settings` records what the
process had when the trial ended.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

ALLOCATORS = ("default", "tuned")
PILLOW_BLOCKS_MAX = 16  # two 12-megapixel images (2 x 3 blocks of 16 MiB) with room to spare
GLIBC_TRIM_THRESHOLD = 1 << 30  # bytes free at the heap's top before glibc gives them back
# mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_glibc_set: dict[str, int] = {}  # what this process set with mallopt
_current = ["default"]  # the setting this process was last given


@cache
def _glibc():
    """The C library's mallopt where it is glibc's; None elsewhere."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
        return libc.mallopt
    except (ValueError, OSError, AttributeError):
        return None


def _pillow_core():
    from PIL import Image

    return Image.core


@cache
def _pillow_initial_blocks_max() -> int:
    """Pillow's block cache size as imported (PILLOW_BLOCKS_MAX or its default, 0)."""
    return _pillow_core().get_blocks_max()


def apply(name: str) -> None:
    """Give this process the allocator ``name`` (before the clock, in every process that
    decodes). ``default`` restores Pillow's cache as imported and sets nothing else."""
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; choose one of {', '.join(ALLOCATORS)}")
    core = _pillow_core()
    initial = _pillow_initial_blocks_max()
    _current[0] = name
    if name == "default":
        core.set_blocks_max(initial)
        return
    core.set_blocks_max(max(PILLOW_BLOCKS_MAX, initial))
    mallopt = _glibc()
    if mallopt is None:
        return
    for param, key, value in (
        (M_MMAP_MAX, "mmap_max", 0),
        (M_TRIM_THRESHOLD, "trim_threshold", GLIBC_TRIM_THRESHOLD),
    ):
        if mallopt(param, value) == 1:  # mallopt returns 1 on success
            _glibc_set[key] = value


def current() -> str:
    """The setting this process was last given (``default`` where none was)."""
    return _current[0]


def settings() -> str:
    """What this process's allocator is set to, for the record ('pillow blocks_max=0; glibc
    as started')."""
    glibc = " ".join(f"{k}={v}" for k, v in sorted(_glibc_set.items()))
    libc = "glibc " + glibc if glibc else ("glibc as started" if _glibc() else "libc as started")
    return f"pillow blocks_max={_pillow_core().get_blocks_max()}; {libc}"


def state() -> dict:
    """The settings that can be read back: Pillow's cache size, and what mallopt was given."""
    return {"pillow_blocks_max": _pillow_core().get_blocks_max(), "glibc": dict(_glibc_set)}
