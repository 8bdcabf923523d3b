"""Kind volume's probe: the bandwidth, IOPS and latency the cap gives, measured by fio or by
the package's O_DIRECT reader (imgread.instruments.ceiling) over the dataset's own files."""

from __future__ import annotations

import itertools
import mmap
import os
import random
import stat
import statistics
import subprocess
import threading
import time
from pathlib import Path

from imgread.errors import TrialError
from imgread.instruments import ceiling

# The probe (about 1.8 s, plus fio's start of ~0.3 s): sequential reads of one buffered IO's
# size by BW_JOBS readers for BW_SECONDS, then 4 KiB reads at random aligned offsets by
# IOPS_JOBS readers for IOPS_SECONDS (several in flight, as a pool's readers are, so a fast
# device reaches the IOPS cap), over at most PROBE_FILES of the dataset's files, looped over.
# The random phase starts GAP_S after the sequential one: the kernel's throttle slice (100 ms,
# extended while IOs wait) must have ended, else the random readers spend IOs the sequential
# ones left unused (seen: +20..40 % over the cap at a 120 ms gap). A fresh slice lets its first
# IOs through at once (+5 % over 0.5 s): the O_DIRECT reader does not count its first RAMP_S;
# fio's ramp_time is not used, as it miscounts here (seen: +10 % on one run in four).
BW_JOBS, BW_SECONDS = 2, 1.0
IOPS_JOBS, IOPS_SECONDS = 4, 0.5
RAMP_S, GAP_S = 0.1, 0.25
SMALL_IO = 4096
PROBE_FILES = 128
_FIO_TIMEOUT_S = 30  # fio's own runtime is bounded; this bounds a hung fio


def probe_files(root: Path, limit: int = PROBE_FILES) -> list[tuple[Path, int]]:
    """(path, size) of up to ``limit`` of the dataset's non-empty regular files on ``root``'s
    filesystem (the walk stops there: a large dataset is not listed whole)."""
    dev = os.stat(root).st_dev
    out: list[tuple[Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = os.stat(p)  # a link's target, where it is on the same filesystem
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_dev == dev:
                out.append((p, st.st_size))
                if len(out) >= limit:
                    return out
    return out


def io_block(read_ahead_kb: int, sizes: list[int]) -> int:
    """The size of one buffered read's IO: read_ahead_kb, or the median file's size where that
    is less (a cold read of a small file is one IO of its size; a small manifest among the
    images does not shrink it), in whole 4 KiB (O_DIRECT's alignment), at least 4 KiB."""
    limit = min(read_ahead_kb * 1024, int(statistics.median(sizes)))
    return max(SMALL_IO, limit // SMALL_IO * SMALL_IO)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _fio_unsafe(name: str) -> bool:
    return any(c in name for c in ";#\n") or name != name.strip()


def fio_names(root: Path, files: list[tuple[Path, int]]) -> list[str]:
    """The files as fio job-file names under ``root`` (':' escaped), those fio cannot take
    (';' and '#' start a comment) left out, as many as fit fio's option line; none where
    ``root`` itself has such a character (the probe then reads without fio)."""
    kept, length = [], 0
    for p, _ in files if not _fio_unsafe(str(root)) else []:
        name = ceiling.fio_name(p.relative_to(root))
        if _fio_unsafe(name):
            continue
        if length + len(name) + 1 > ceiling.FIO_LINE:
            break
        kept.append(name)
        length += len(name) + 1
    return kept


def _fio_job(root: Path, seq: list[str], rnd: list[str], block: int) -> str:
    """The probe's fio job file: BW_JOBS sequential readers of ``seq`` (each starting at
    another file), then, GAP_S after they end, IOPS_JOBS random 4 KiB readers of ``rnd``;
    read-only, and no cache invalidation (the trial's cache state is left as it is)."""
    lines = [
        "[global]",
        f"directory={ceiling.fio_name(root)}",
        "thread",
        "ioengine=psync",
        "direct=1",
        "invalidate=0",
        "time_based",
        "group_reporting",
        "randrepeat=0",
        "norandommap",
    ]
    for j in range(BW_JOBS):
        start = j * len(seq) // BW_JOBS
        lines += [
            f"[bw{j}]",
            "rw=read",
            f"bs={block}",
            f"runtime={_ms(BW_SECONDS)}ms",
            "file_service_type=sequential",
            "filename=" + ":".join(seq[start:] + seq[:start]),
        ]
    lines += [
        "[iops]",
        "new_group",  # its own report; a stonewall would cost a second start (~0.3 s)
        f"startdelay={_ms(BW_SECONDS + GAP_S)}ms",
        "rw=randread",
        f"bs={SMALL_IO}",
        f"numjobs={IOPS_JOBS}",
        f"runtime={_ms(IOPS_SECONDS)}ms",
        "file_service_type=random",
        "filename=" + ":".join(rnd),
    ]
    return "\n".join(lines) + "\n"


def probe_with_fio(fio: str, root: Path, seq: list[str], rnd: list[str], block: int) -> dict:
    """{bandwidth_mb_per_s, iops, latency_ms} measured by fio (a child: same cgroup) over the
    files named (:func:`fio_names`)."""
    try:
        out = ceiling.run_fio_job(fio, _fio_job(root, seq, rnd, block), timeout=_FIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TrialError(f"volume probe: fio did not finish in {_FIO_TIMEOUT_S} s") from None
    except RuntimeError as exc:
        raise TrialError(f"volume probe: {exc}") from None
    groups = {job["jobname"]: job["read"] for job in out["jobs"]}  # one per group
    bw, rnd = groups["bw0"], groups["iops"]
    pct = rnd.get("clat_ns", {}).get("percentile", {})
    median_ns = pct.get("50.000000") or rnd.get("clat_ns", {}).get("mean")
    return dict(
        bandwidth_mb_per_s=bw["bw_bytes"] / 1e6,
        iops=float(rnd["iops"]),
        latency_ms=median_ns / 1e6 if median_ns else None,
    )


def _sequential(files: list[tuple[Path, int]], block: int, plan: tuple, out: list, errors: list):
    """Read the files from the first on, in whole blocks (a tail shorter than a block is left
    out, as fio does), until the plan's end; count the bytes read after its start."""
    count_from, until = plan
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    nbytes = 0
    try:
        for path, size in itertools.cycle(files):
            for started, got in ceiling.direct_reads(path, buf, size, until):
                if started >= count_from:
                    nbytes += got
            if time.perf_counter() >= until:
                break
    except BaseException as exc:  # reported by the caller, not lost in the thread
        errors.append(exc)
    finally:
        buf.close()
        out.append(nbytes)


def _random(fds: list[tuple[int, int]], seed: int, plan: tuple, out: list, errors: list):
    """4 KiB reads at random aligned offsets until the plan's end; the times of those started
    after its start."""
    count_from, until = plan
    buf = mmap.mmap(-1, SMALL_IO)
    rng = random.Random(seed)
    times = []
    try:
        while (now := time.perf_counter()) < until:
            fd, size = fds[rng.randrange(len(fds))]
            offset = rng.randrange(max(1, size // SMALL_IO)) * SMALL_IO
            t = time.perf_counter_ns()
            os.preadv(fd, [buf], offset)
            if now >= count_from:
                times.append(time.perf_counter_ns() - t)
    except BaseException as exc:
        errors.append(exc)
    finally:
        buf.close()
        out.append(times)


def _run_threads(target, args_per_thread: list[tuple]) -> None:
    threads = [threading.Thread(target=target, args=a, daemon=True) for a in args_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _plan(seconds: float, ramp: float = 0.0) -> tuple[float, float]:
    """(count from, until) of a phase starting now: ``ramp`` not counted, then ``seconds``."""
    start = time.perf_counter() + ramp
    return start, start + seconds


def probe_direct(seq: list[tuple[Path, int]], rnd: list[tuple[Path, int]], block: int) -> dict:
    """The same measurement as :func:`probe_with_fio` by in-package O_DIRECT readers (threads
    of this process: same cgroup)."""
    errors: list[BaseException] = []
    counts: list[int] = []
    plan = _plan(BW_SECONDS)
    starts = [j * len(seq) // BW_JOBS for j in range(BW_JOBS)]  # each at another file
    _run_threads(_sequential, [(seq[s:] + seq[:s], block, plan, counts, errors) for s in starts])
    if errors:
        raise errors[0]
    fds = []
    try:
        for p, size in rnd:
            fds.append((os.open(p, os.O_RDONLY | os.O_DIRECT), size))
        time.sleep(GAP_S)
        lats: list[list[int]] = []
        rplan = _plan(IOPS_SECONDS, RAMP_S)
        _run_threads(_random, [(fds, 1000 + j, rplan, lats, errors) for j in range(IOPS_JOBS)])
    finally:
        for fd, _ in fds:
            os.close(fd)
    if errors:
        raise errors[0]
    times = [t for ts in lats for t in ts]
    return dict(
        bandwidth_mb_per_s=sum(counts) / 1e6 / BW_SECONDS,
        iops=len(times) / IOPS_SECONDS,
        latency_ms=statistics.median(times) / 1e6 if times else None,
    )
