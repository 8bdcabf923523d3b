"""Page-cache control that proves itself: evict files, then measure how much is still resident.

Eviction follows fio and vmtouch: ``posix_fadvise(POSIX_FADV_DONTNEED)`` on each file (after
``fsync``, since dirty pages cannot be dropped), checked with ``mincore()`` on a read-only
mapping. Other methods: ``drop_caches`` (root), ``saturate`` (the study's own: write and read
a large temporary file) and ``none``. Residency is ``None`` (unknown) where mincore or fadvise
is unavailable, never 0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from imgread.errors import CacheStateError, UserError

METHODS = ("fadvise", "drop_caches", "saturate", "none")
DEFAULT_METHOD = "fadvise" if sys.platform.startswith("linux") else "none"
DEFAULT_MAX_RESIDENT_FRACTION = 0.01
DEFAULT_MIN_WARM_FRACTION = 0.99
DEFAULT_SATURATE_BYTES = 3 * 1024**3
SATURATE_HEADROOM_BYTES = 256 * 1024**2  # never fill a disk to the brim
_CHUNK = 8 * 1024**2

# --------------------------------------------------------------------------- libc


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.restype = ctypes.c_int
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def residency_supported() -> bool:
    """True where mincore() and posix_fadvise() can be used (Linux)."""
    return _LIBC is not None and hasattr(os, "posix_fadvise")


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by ``paths``: a file, a folder (recursive) or a manifest.csv (its images)."""
    from imgread.dataset.manifest import MANIFEST_NAME, read_manifest

    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == MANIFEST_NAME:
            m = read_manifest(p)
            out.extend(m.root / e.path for e in m.entries)
        elif p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink()))
        else:
            raise UserError(f"no such file or folder: {p}")
    return out


def _pages_of(path: Path) -> tuple[int, int]:
    """(resident pages, total pages) of one file, via mincore on a read-only shared mapping."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, 0
        addr = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap failed: {os.strerror(err)}", str(path))
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        if _LIBC.mincore(ctypes.c_void_p(addr), size, vec) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore failed: {os.strerror(err)}", str(path))
        resident = sum(b & 1 for b in vec.raw)
    finally:
        _LIBC.munmap(ctypes.c_void_p(addr), size)
    return resident, pages


def resident_fraction(paths: Iterable[str | os.PathLike]) -> float | None:
    """Fraction of the files' pages in the page cache (0..1); None where it cannot be measured."""
    if not residency_supported():
        return None
    resident = total = 0
    for p in paths:
        r, t = _pages_of(Path(p))
        resident += r
        total += t
    return resident / total if total else 0.0


def evict(paths: Iterable[str | os.PathLike]) -> None:
    """Ask the kernel to drop the files' pages from the page cache (fsync, then fadvise)."""
    if not hasattr(os, "posix_fadvise"):
        raise UserError("posix_fadvise is not available on this platform; use --cache-method none")
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped; a freshly written file has them
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: Iterable[str | os.PathLike]) -> int:
    """Read every file once so that it is in the page cache; return the bytes read."""
    total = 0
    buf = bytearray(_CHUNK)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return total


def drop_caches() -> None:
    """sync, then drop the whole page cache (root only)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise UserError(
            "cache method 'drop_caches' needs root (it writes /proc/sys/vm/drop_caches); "
            "use 'fadvise' instead"
        )
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except OSError as exc:
        raise UserError(f"cannot write /proc/sys/vm/drop_caches: {exc.strerror}") from None


def check_saturate_room(size_bytes: int, folder: str | os.PathLike | None) -> Path:
    """The folder the saturate file would go in; UserError if it lacks room for it."""
    folder = Path(folder) if folder else Path(tempfile.gettempdir())
    if not folder.is_dir():
        raise UserError(f"saturate folder {folder} does not exist")
    free = shutil.disk_usage(folder).free
    if free < size_bytes + SATURATE_HEADROOM_BYTES:
        raise UserError(
            f"cache method 'saturate' needs {size_bytes / 1e9:.2f} GB "
            f"(+{SATURATE_HEADROOM_BYTES >> 20} MiB headroom) free in {folder}, "
            f"but only {free / 1e9:.2f} GB is free; "
            "lower saturate_bytes or choose another saturate_dir"
        )
    return folder


def saturate(size_bytes: int = DEFAULT_SATURATE_BYTES, folder: str | os.PathLike | None = None):
    """The study's method: write, then read back, a temporary file of ``size_bytes``.

    The file is deleted afterwards, also on Ctrl-C or an exception. Whether this evicts
    anything depends on the machine's memory; the residency check says whether it did.
    """
    folder = check_saturate_room(size_bytes, folder)
    fd, name = tempfile.mkstemp(prefix="imgread-saturate-", suffix=".bin", dir=folder)
    try:
        block = os.urandom(_CHUNK)
        written = 0
        while written < size_bytes:
            written += os.write(fd, block[: min(_CHUNK, size_bytes - written)])
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        while os.read(fd, _CHUNK):
            pass
    finally:
        os.close(fd)
        os.unlink(name)


def flush(
    paths: list[Path],
    method: str = DEFAULT_METHOD,
    saturate_bytes: int = DEFAULT_SATURATE_BYTES,
    saturate_dir: str | os.PathLike | None = None,
) -> float | None:
    """Evict ``paths`` from the page cache by ``method``; return the resident fraction after."""
    if method == "fadvise":
        evict(paths)
    elif method == "drop_caches":
        drop_caches()
    elif method == "saturate":
        saturate(saturate_bytes, saturate_dir)
    elif method != "none":
        raise UserError(f"unknown cache method {method!r}; choose one of {', '.join(METHODS)}")
    return resident_fraction(paths)


def ensure_cold(
    paths: list[Path],
    method: str,
    max_resident_fraction: float = DEFAULT_MAX_RESIDENT_FRACTION,
    **kwargs,
) -> float | None:
    """Flush, measure, and raise CacheStateError if more than the allowed fraction is resident.

    Method 'none' measures and returns residency but claims nothing, so it never fails.
    """
    fraction = flush(paths, method, **kwargs)
    if method != "none" and fraction is not None and fraction > max_resident_fraction:
        raise CacheStateError(
            f"cache method {method!r} left {fraction:.1%} of the {len(paths)} files resident "
            f"(allowed: {max_resident_fraction:.1%}); the trial would not be cold. "
            "Use 'fadvise' or 'drop_caches', or raise max_resident_fraction"
        )
    return fraction


def ensure_warm(paths: list[Path], min_fraction: float = DEFAULT_MIN_WARM_FRACTION) -> float | None:
    """Read the files once and raise CacheStateError if they are not then resident."""
    warm(paths)
    fraction = resident_fraction(paths)
    if fraction is not None and fraction < min_fraction:
        raise CacheStateError(
            f"after reading the {len(paths)} files only {fraction:.1%} is resident "
            f"(need {min_fraction:.0%}); is memory short?"
        )
    return fraction
