"""What the hardware allows: the device's cold sequential-read bandwidth on the dataset's own
files, and the CPU ceiling of a decode (one core's rate x the cores a cell can use).

The device is measured with ``fio`` when it is on PATH (``invalidate=1``, read-only, each job
reading its own share of the files) and otherwise with an in-package reader that opens the
files with ``O_DIRECT`` and keeps several requests in flight (one thread per request). Both
run at several job counts; the best is the ceiling. Before each run the files are evicted and
their residency is measured and recorded, so the number is shown to be cold.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError
from imgread.instruments import page_cache as cachectl

DEFAULT_JOBS = (1, 2, 4, 8, 16)
METHODS = ("auto", "fio", "odirect")
_BLOCK = 1 << 20  # O_DIRECT reader: 1 MiB requests
# fio reads whole blocks only (a file's tail shorter than bs is left out, 0 bytes of a file
# smaller than bs): 128 KiB, the kernel's default read-ahead, keeps the part left out small;
# smaller where the smallest file is smaller. Bandwidth counts the bytes fio read.
FIO_BLOCK = 128 * 1024


def fio_block(paths: list[Path]) -> int:
    """fio's block size: 128 KiB, or the largest power of two (>= 4 KiB) the smallest file
    holds."""
    smallest = min(p.stat().st_size for p in paths)
    block = FIO_BLOCK
    while block > 4096 and block > smallest:
        block //= 2
    return block


def split(paths: list[Path], jobs: int) -> list[list[Path]]:
    """Deal the files round-robin to ``jobs`` readers (no reader gets none)."""
    jobs = max(1, min(jobs, len(paths)))
    return [paths[i::jobs] for i in range(jobs)]


def fio_version(fio: str) -> str:
    """``fio --version`` (e.g. 'fio-3.33')."""
    return subprocess.run(
        [fio, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def fio_name(path: Path) -> str:
    return str(path).replace(":", "\\:")  # fio separates file names with ':'


FIO_LINE = 3500  # fio drops a job whose option line passes 4096 characters


def read_with_fio(fio: str, paths: list[Path], jobs: int) -> tuple[int, float]:
    """(bytes, seconds) of ``jobs`` fio readers, each reading its share of ``paths`` once.

    A reader's share is a chain of job sections (each a file list short enough for fio's
    line limit, each waiting for the one before), so ``jobs`` chains run at once.
    """
    lines = [
        "[global]",
        "rw=read",
        f"bs={fio_block(paths)}",
        "ioengine=psync",
        "invalidate=1",
        "file_service_type=sequential",
    ]
    for i, share in enumerate(split(paths, jobs)):
        chunks: list[list[str]] = [[]]
        for p in share:
            name = fio_name(p)
            if chunks[-1] and sum(len(n) + 1 for n in chunks[-1]) + len(name) > FIO_LINE:
                chunks.append([])
            chunks[-1].append(name)
        for j, chunk in enumerate(chunks):
            lines.append(f"[r{i}c{j}]")
            if j:
                lines.append(f"wait_for=r{i}c{j - 1}")
            lines.append("filename=" + ":".join(chunk))
    out = run_fio_job(fio, "\n".join(lines) + "\n")
    # A section's time is the time its reads took (mean latency x reads, in ns: fio's
    # run time is in whole ms, too coarse for a small dataset); a chain's is the sum of its
    # sections'; the readers ran at once, so the run took as long as its slowest chain.
    chains: dict[str, float] = {}
    nbytes = 0
    for job in out["jobs"]:
        chain = job["jobname"].split("c", 1)[0]
        read = job["read"]
        chains[chain] = chains.get(chain, 0.0) + read["lat_ns"]["mean"] * read["total_ios"] / 1e9
        nbytes += int(read["io_bytes"])
    return nbytes, max(chains.values())


def run_fio_job(fio: str, job: str, timeout: float | None = None) -> dict:
    """Run a fio job file's text read-only and return fio's JSON report; RuntimeError with
    fio's message where it fails (subprocess.TimeoutExpired past ``timeout``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".fio", delete=False) as fh:
        fh.write(job)
        jobfile = fh.name
    try:
        # --readonly: fio refuses any write, so the dataset (maybe the user's folder) is safe
        proc = subprocess.run(
            [fio, "--readonly", "--output-format=json", jobfile],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        os.unlink(jobfile)
    if proc.returncode != 0 or "{" not in proc.stdout:
        raise RuntimeError(f"fio failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def direct_reads(
    path: Path, buf: mmap.mmap, size: int | None = None, until: float | None = None
) -> Iterator[tuple[float, int]]:
    """(time.perf_counter() at its start, bytes) of each O_DIRECT read of ``path`` into
    ``buf`` (page-aligned, as O_DIRECT needs), from offset 0 to the file's end; with ``size``,
    whole ``len(buf)`` blocks within it only (fio's way: a shorter tail is left out); with
    ``until``, none started at or after that perf_counter time. The one O_DIRECT reader of
    the package: the device ceiling's and the volume probe's."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    try:
        offset, block = 0, len(buf)
        while size is None or offset + block <= size:
            now = time.perf_counter()
            if until is not None and now >= until:
                break
            got = os.preadv(fd, [buf], offset)
            if got <= 0:
                break
            yield now, got
            offset += got
    finally:
        os.close(fd)


def _read_direct(paths: list[Path], counter: list[int], errors: list[BaseException]) -> None:
    buf = mmap.mmap(-1, _BLOCK)  # page-aligned, as O_DIRECT needs
    try:
        for path in paths:
            counter.append(sum(got for _, got in direct_reads(path, buf)))
    except BaseException as exc:  # reported by the caller, not lost in the thread
        errors.append(exc)
    finally:
        buf.close()


def read_direct(paths: list[Path], jobs: int) -> tuple[int, float]:
    """(bytes, seconds) of ``jobs`` threads reading their shares with O_DIRECT."""
    counter: list[int] = []
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_read_direct, args=(share, counter, errors))
        for share in split(paths, jobs)
    ]
    t0 = time.perf_counter_ns()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = (time.perf_counter_ns() - t0) / 1e9
    if errors:
        raise errors[0]
    return sum(counter), seconds


def direct_supported(path: Path) -> bool:
    """Whether the filesystem of ``path`` accepts O_DIRECT reads (tmpfs does not)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    errors: list[BaseException] = []
    _read_direct([path], [], errors)
    return not errors


def measure_device(
    manifest: str | os.PathLike,
    jobs: list[int] | tuple[int, ...] = DEFAULT_JOBS,
    repetitions: int = 3,
    method: str = "auto",
    cache_method: str = cachectl.DEFAULT_METHOD,
    max_resident_fraction: float = cachectl.DEFAULT_MAX_RESIDENT_FRACTION,
) -> dict:
    """Cold sequential-read bandwidth of the manifest's files at each job count (median of
    ``repetitions``), and the best of them: the device ceiling a loader can approach."""
    if method not in METHODS:
        raise UserError(f"unknown ceiling method {method!r}; choose one of {', '.join(METHODS)}")
    m = read_manifest(manifest)
    paths = [m.root / e.path for e in m.entries]
    if not paths:
        raise UserError(f"{manifest}: no images to read")
    fio, use_fio = _reader(method, paths)
    runs = []
    for k in sorted(set(jobs)):
        for rep in range(repetitions):
            resident = cachectl.ensure_cold(paths, cache_method, max_resident_fraction)
            nbytes, seconds = read_with_fio(fio, paths, k) if use_fio else read_direct(paths, k)
            if nbytes <= 0 or seconds <= 0:
                raise UserError(
                    f"{manifest}: the device ceiling read {nbytes} bytes in {seconds} s with "
                    f"{'fio' if use_fio else 'O_DIRECT'}; the files are too small to time"
                )
            runs.append(
                dict(
                    jobs=min(k, len(paths)),
                    repetition=rep,
                    bytes=nbytes,
                    seconds=seconds,
                    mb_per_s=nbytes / 1e6 / seconds,
                    resident_fraction_before=resident,
                )
            )
    by_jobs: dict[int, list[float]] = {}
    for r in runs:
        by_jobs.setdefault(r["jobs"], []).append(r["mb_per_s"])
    medians = {k: _median(v) for k, v in by_jobs.items()}
    best = max(medians, key=medians.get)
    return dict(
        method="fio" if use_fio else "odirect",
        fio_version=fio_version(fio) if use_fio else "not used",
        files=len(paths),
        bytes=sum(e.bytes for e in m.entries),
        cache_method=cache_method,
        block_bytes=fio_block(paths) if use_fio else _BLOCK,
        device_mb_per_s=medians[best],
        best_jobs=best,
        median_mb_per_s_by_jobs={str(k): v for k, v in sorted(medians.items())},
        runs=runs,
    )


def _reader(method: str, paths: list) -> tuple[str | None, bool]:
    """(fio's path or None, whether fio reads): fio where asked or found, else O_DIRECT;
    UserError where neither can read these files."""
    fio = shutil.which("fio")
    if method == "fio" and fio is None:
        raise UserError("ceiling method 'fio' asked for, but fio is not on PATH (apt install fio)")
    use_fio = fio is not None and method in ("auto", "fio")
    if not use_fio and not direct_supported(paths[0]):
        raise UserError(
            f"{paths[0].parent}: the filesystem refuses O_DIRECT and fio is not installed; "
            "install fio (apt install fio) to measure the device ceiling"
        )
    return fio, use_fio


def _median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
