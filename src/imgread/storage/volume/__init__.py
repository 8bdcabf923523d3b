"""Kind ``volume``: a cloud volume capped in read bandwidth and IOPS, emulated on this disk.

The same files as ``local``, read the same way (buffered, through the page cache), by a trial
whose process runs in a cgroup that caps the reads of the dataset's block device: cgroup v1's
``blkio.throttle.read_bps_device`` and ``read_iops_device``, or cgroup v2's ``io.max``
(``MAJ:MIN rbps=N riops=N``), whichever the machine has. The caps count what reaches the
device: a cold buffered read is cut into IOs of up to ``read_ahead_kb`` (the file's size where
smaller), each counted once against ``read_iops``; a read served from the page cache is not
capped at all, as on a real volume.

Where the cgroup is made (``imgread-<pid>-<n>``; memcg's ``imgread-trial-<pid>`` is another):

- v1: at the root of the blkio hierarchy (a blkio throttle only counts on the whole disk, and
  the root is where no one else's limit applies); the other v1 hierarchies are untouched,
  unless one is mounted together with blkio.
- v2: beside the process's current cgroup, under its parent (so the limits of the parent and
  above, a SLURM job's or a systemd slice's, still apply), with ``+io`` written to the parent's
  ``cgroup.subtree_control`` where it is not there yet (left there: it limits nothing by
  itself). A process at the root gets a child of the root. v2 forbids a parent with processes
  of its own to enable controllers for its children: ``missing()`` says so.

``open`` writes the caps and then moves the *current* process (all its threads) into the
cgroup: the pools and DataLoader workers started afterwards inherit it, and so do fio and the
probe's threads, so the probe measures the very cap the trial reads under. ``close`` moves the
process back to the cgroup it was in, waits up to 5 s for the cgroup's last tasks (workers
being reaped) and removes it; ``sweep`` removes those of processes that died without closing.
"""

from __future__ import annotations

import itertools
import mmap
import os
import random
import re
import shutil
import stat
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgread.errors import TrialError, UserError
from imgread.instruments import ceiling, memcg
from imgread.storage import base
from imgread.storage.local import FileOpener

PREFIX = "imgread-"
NAME = re.compile(r"^imgread-(\d+)-(\d+)$")  # imgread-<pid>-<n>
PROC = Path("/proc")
SYS_BLOCK = Path("/sys/dev/block")
SYS_BDI = Path("/sys/class/bdi")
V1_BPS, V1_IOPS = "blkio.throttle.read_bps_device", "blkio.throttle.read_iops_device"
V2_MAX = "io.max"
LEAVE_WAIT_S = 5.0  # close: how long the cgroup's last tasks (reaped workers) may take to go

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

_counter = itertools.count(1)  # <n> of imgread-<pid>-<n>; 0 is missing()'s trial mkdir
_counter_lock = threading.Lock()


# --------------------------------------------------------------------------- the device


@dataclass(frozen=True)
class Device:
    """The whole disk a dataset lives on, and the read-ahead of its filesystem."""

    major: int
    minor: int
    name: str  # vda, sda, nvme0n1, dm-0
    read_ahead_kb: int

    @property
    def id(self) -> str:
        return f"{self.major}:{self.minor}"


def _mount_source(major: int, minor: int) -> tuple[str, str] | None:
    """(fstype, source) of the mount whose device number is ``major:minor``."""
    for fields, tail in memcg.mountinfo():
        if len(fields) >= 3 and len(tail) >= 2 and fields[2] == f"{major}:{minor}":
            return tail[0], tail[1]
    return None


def block_device(root: str | os.PathLike) -> Device:
    """The whole disk under ``root`` (a partition's parent disk); UserError where the dataset
    is not on a block device (tmpfs, overlay, a network filesystem)."""
    st = os.stat(root)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if not (SYS_BLOCK / f"{major}:{minor}").exists():
        # btrfs and the like report an anonymous device number: the mount's source names the disk
        fstype, source = _mount_source(major, minor) or ("unknown", "none")
        try:
            src = os.stat(source) if source.startswith("/") else None
        except OSError:
            src = None
        if src is None or not stat.S_ISBLK(src.st_mode):
            raise UserError(
                f"{root}: the dataset is on {fstype} (source {source}), not on a block device; "
                "a volume caps a disk's reads, so put the dataset on a disk's filesystem "
                "(ext4, xfs) to measure a volume profile"
            )
        major, minor = os.major(src.st_rdev), os.minor(src.st_rdev)
    fs_dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysdir = Path(os.path.realpath(SYS_BLOCK / f"{major}:{minor}"))
    if (sysdir / "partition").exists():  # a throttle holds on a whole disk only
        sysdir = sysdir.parent
        major, minor = (int(x) for x in (sysdir / "dev").read_text().split(":"))
    return Device(major, minor, sysdir.name, _read_ahead_kb(fs_dev, f"{major}:{minor}", sysdir))


def _read_ahead_kb(fs_dev: str, disk: str, sysdir: Path) -> int:
    """The read-ahead of the filesystem's backing device (its bdi), else of the disk's queue."""
    for path in (SYS_BDI / fs_dev, SYS_BDI / disk):
        try:
            return int((path / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            pass
    try:
        return int((sysdir / "queue" / "read_ahead_kb").read_text())
    except (OSError, ValueError):
        return 128  # the kernel's default


# --------------------------------------------------------------------------- the cgroup


@dataclass(frozen=True)
class Place:
    """Where this process's capped cgroups are made: the hierarchy, the cgroup the process is
    in now, and the parent of the new ones."""

    version: str  # "v1" or "v2"
    mount: Path  # the hierarchy's root as this process sees it
    current: Path
    parent: Path

    @property
    def label(self) -> str:
        return "v1 blkio" if self.version == "v1" else "v2 io.max"


def _paths(pid: int | str = "self") -> dict[str, str]:
    """{controller: cgroup path} of a process ('' for v2's unified hierarchy)."""
    paths = {}
    for line in (PROC / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def _inside(point: str, root: str, path: str) -> Path | None:
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        return None  # the process's cgroup is outside what this mount shows
    return Path(point) / ("" if rel == "." else rel)


def place() -> Place | str:
    """Where the cgroup goes (v1 blkio first, else v2 with io), or one line why nowhere."""
    try:
        paths = _paths()
    except OSError as exc:
        return f"cannot read /proc/self/cgroup ({exc.strerror})"
    v2_reason = None
    for root, point, fstype, options in memcg.mounts():
        if fstype == "cgroup" and "blkio" in options.split(",") and "blkio" in paths:
            current = _inside(point, root, paths["blkio"])
            if current is None:
                return f"this process's blkio cgroup {paths['blkio']} is outside {point}"
            if not (Path(point) / V1_BPS).exists():
                return f"the kernel has no blkio throttling ({point}/{V1_BPS} is missing)"
            return Place("v1", Path(point), current, Path(point))
    for root, point, fstype, _ in memcg.mounts():
        if fstype == "cgroup2" and "" in paths:
            current = _inside(point, root, paths[""])
            if current is None:
                v2_reason = f"this process's cgroup {paths['']} is outside {point}"
                continue
            parent = current.parent if current != Path(point) else current
            controllers = _words(parent / "cgroup.controllers")
            if "io" not in controllers:
                v2_reason = (
                    f"the cgroup v2 io controller is not available in {parent} "
                    f"(cgroup.controllers: {' '.join(controllers) or 'none'})"
                )
                continue
            if (
                "io" not in _words(parent / "cgroup.subtree_control")
                and parent != Path(point)
                and _procs(parent)
            ):
                v2_reason = (
                    f"{parent} has processes of its own, so cgroup v2 cannot enable io for "
                    "its children"
                )
                continue
            return Place("v2", Path(point), current, parent)
    return (
        v2_reason or "neither a cgroup v1 blkio hierarchy nor a cgroup v2 io controller is mounted"
    )


def cgroup_of(pid: int | str = "self") -> Path | None:
    """The folder of the cgroup a process is in, in the hierarchy :func:`place` picks (v1:
    blkio; v2: the unified one); None where there is none or the process is gone."""
    where = place()
    if isinstance(where, str):
        return None
    try:
        paths = _paths(pid)
    except (OSError, ValueError):
        return None
    key = "blkio" if where.version == "v1" else ""
    for root, point, _, _ in memcg.mounts():
        if Path(point) == where.mount and key in paths:
            return _inside(point, root, paths[key])
    return None


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _procs(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _move(pid: int, to: Path) -> None:
    (to / "cgroup.procs").write_text(f"{pid}\n")


def _slurm_step() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return ""
    step = os.environ.get("SLURM_STEP_ID")
    return f"inside SLURM job {job}" + (f" step {step}" if step else "") + ": "


def throttle_lines(version: str, device: Device, read_iops: int, read_mb_per_s: float) -> dict:
    """{file: line} that caps ``device``'s reads (MB: 1e6 bytes)."""
    bps = max(1, round(read_mb_per_s * 1e6))
    if version == "v1":
        return {V1_BPS: f"{device.id} {bps}", V1_IOPS: f"{device.id} {int(read_iops)}"}
    return {V2_MAX: f"{device.id} rbps={bps} riops={int(read_iops)}"}


def served(version: str, folder: Path, device: Device) -> tuple[int, int]:
    """(reads, bytes) the cgroup's processes have had from ``device`` so far (v1:
    blkio.throttle.io_serviced / io_service_bytes; v2: io.stat)."""
    if version == "v1":
        return (
            _v1_read(folder / "blkio.throttle.io_serviced", device),
            _v1_read(folder / "blkio.throttle.io_service_bytes", device),
        )
    for line in _lines(folder / "io.stat"):
        dev, *pairs = line.split()
        if dev == device.id:
            kv = dict(p.split("=", 1) for p in pairs if "=" in p)
            return int(kv.get("rios", 0)), int(kv.get("rbytes", 0))
    return 0, 0


def _v1_read(path: Path, device: Device) -> int:
    for line in _lines(path):
        parts = line.split()
        if len(parts) == 3 and parts[0] == device.id and parts[1] == "Read":
            return int(parts[2])
    return 0


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


# --------------------------------------------------------------------------- the probe


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
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                offset = 0
                while offset + block <= size and (now := time.perf_counter()) < until:
                    got = os.preadv(fd, [buf], offset)
                    if got <= 0:
                        break
                    if now >= count_from:
                        nbytes += got
                    offset += got
            finally:
                os.close(fd)
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


# --------------------------------------------------------------------------- the kind


class VolumeSession(base.Session):
    """The process moved into a cgroup that caps the dataset disk's reads (module docstring)."""

    def __init__(self, profile: base.Profile, root: Path, where: Place, device: Device):
        self.opener = FileOpener()
        self.profile, self.root, self.where, self.device = profile, root, where, device
        self.pid = os.getpid()
        self.before = where.current  # where the process goes back to
        self.lines = throttle_lines(
            where.version, device, profile.params["read_iops"], profile.params["read_mb_per_s"]
        )
        self.folder = self._new_folder()
        self._closed = False
        self._enter()

    def _new_folder(self) -> Path:
        while True:
            with _counter_lock:
                n = next(_counter)
            folder = self.where.parent / f"{PREFIX}{self.pid}-{n}"
            if not folder.exists():  # one left by an earlier process with this pid: skip it
                return folder

    def _enter(self) -> None:
        """Make the cgroup, write the caps, move the process in; undo all of it on a failure."""
        moved = False
        try:
            if self.where.version == "v2" and "io" not in _words(
                self.where.parent / "cgroup.subtree_control"
            ):
                (self.where.parent / "cgroup.subtree_control").write_text("+io\n")
            self.folder.mkdir()
            for name, line in self.lines.items():
                (self.folder / name).write_text(line + "\n")
                if not self._holds(name, line):
                    raise OSError(f"{self.folder / name} does not show {line!r} after writing it")
            _move(self.pid, self.folder)
            moved = True
        except BaseException as exc:
            self._undo(moved)
            if isinstance(exc, OSError):
                raise UserError(
                    f"storage {self.profile.name} (volume): cannot cap {self.device.id} "
                    f"{self.device.name} in {self.folder}: {exc.strerror or exc}"
                ) from None
            raise

    def _holds(self, name: str, line: str) -> bool:
        dev, _, value = line.partition(" ")
        for shown in _lines(self.folder / name):
            parts = shown.split()
            if parts and parts[0] == dev:
                return all(v in parts[1:] for v in value.split())  # v2 adds wbps=max ...
        return False

    def _undo(self, moved: bool) -> None:
        if moved:
            try:
                _move(self.pid, self.before)
            except OSError:
                try:
                    _move(self.pid, self.where.mount)
                except OSError:
                    pass  # remove_cgroup moves it out below
        if self.folder.exists():
            memcg.remove_cgroup(self.folder, self.before, 0.0)

    def settings(self) -> dict[str, Any]:
        return {
            "storage_device": f"{self.device.id} {self.device.name}",
            "storage_read_ahead_kb": self.device.read_ahead_kb,
            "storage_cgroup": self.where.label,
            "storage_throttle": "; ".join(f"{k}={v}" for k, v in self.lines.items()),
        }

    def served(self) -> tuple[int, int]:
        """(reads, bytes) this cgroup has had from the disk so far."""
        return served(self.where.version, self.folder, self.device)

    def probe(self) -> base.Probe:
        t0 = time.perf_counter()
        rnd = [(p, s) for p, s in probe_files(self.root) if s >= SMALL_IO]
        if not rnd:
            raise UserError(
                f"{self.root}: no file of at least {SMALL_IO} bytes to probe the volume with"
            )
        block = io_block(self.device.read_ahead_kb, [s for _, s in rnd])
        seq = [(p, s) for p, s in rnd if s >= block]  # whole blocks only, as fio reads
        fio = shutil.which("fio")
        names = (fio_names(self.root, seq), fio_names(self.root, rnd)) if fio else ([], [])
        if fio and all(names):
            got, method = probe_with_fio(fio, self.root, *names, block), "fio"
        else:
            if not ceiling.direct_supported(rnd[0][0]):
                raise UserError(
                    f"{self.root}: the filesystem refuses O_DIRECT and fio is not installed; "
                    "install fio (apt install fio) to probe the volume"
                )
            got, method = probe_direct(seq, rnd, block), "odirect"
        # Let the throttle forget the probe before the trial reads: while its slice lasts, the
        # bandwidth the 4 KiB phase left unused stays available, and the trial's first reads
        # ran far over the cap (seen: 2.5x for 42 MB read right after the probe; 1.08x after
        # an idle GAP_S, the slice's own first burst).
        time.sleep(GAP_S)
        return base.Probe(
            **got,
            seconds=time.perf_counter() - t0,
            detail={"method": method, "block_kb": block / 1024, "files": len(rnd)},
        )

    def close(self) -> None:
        if self._closed or os.getpid() != self.pid:  # a forked worker's copy owns nothing
            return
        self._closed = True
        try:
            try:
                _move(self.pid, self.before)
                back = self.before
            except OSError:  # the cgroup it was in is gone: the hierarchy's root always is
                _move(self.pid, self.where.mount)
                back = self.where.mount
            if not memcg.remove_cgroup(self.folder, back, LEAVE_WAIT_S):
                print(f"warning: could not remove {self.folder}", file=sys.stderr)
        except OSError as exc:
            print(f"warning: could not leave {self.folder}: {exc}", file=sys.stderr)


class VolumeKind(base.Kind):
    name = "volume"
    description = (
        "the dataset's files on this disk, read through a cgroup that caps the disk's read "
        "bandwidth and IOPS (a cloud volume: EBS, a persistent disk)"
    )
    needs = "root, and a cgroup v1 blkio hierarchy or the cgroup v2 io controller"
    settings = (
        base.Setting(
            "read_iops",
            int,
            3000,
            "read requests per second the volume allows",
            minimum=1,
            maximum=1e7,
        ),
        base.Setting(
            "read_mb_per_s",
            float,
            125.0,
            "read bandwidth the volume allows, MB/s (1e6 bytes)",
            minimum=0.1,
            maximum=1e5,
        ),
    )

    def __init__(self) -> None:
        self._missing: dict[int, str | None] = {}  # per process (a fork asks again)

    def missing(self) -> str | None:
        pid = os.getpid()
        if pid not in self._missing:
            self._missing[pid] = self._why_not()
        return self._missing[pid]

    def _why_not(self) -> str | None:
        uid = os.geteuid() if hasattr(os, "geteuid") else -1
        if uid != 0:
            return f"needs root to make a blkio cgroup (running as uid {uid})"
        where = place()
        if isinstance(where, str):
            return _slurm_step() + where
        trial = where.parent / f"{PREFIX}{os.getpid()}-0"  # can one be made there at all?
        try:
            trial.mkdir()
            trial.rmdir()
        except FileExistsError:
            memcg.remove_cgroup(trial, where.mount, 0.0)
        except OSError as exc:
            return f"{_slurm_step()}cannot make a cgroup in {where.parent} ({exc.strerror})"
        return None

    def open(self, profile: base.Profile, root: Path) -> base.Session:
        why = self.missing()
        if why:
            raise UserError(f"storage {profile.name} (volume) cannot run here: {why}")
        device = block_device(root)
        where = place()
        if isinstance(where, str):
            raise UserError(f"storage {profile.name} (volume) cannot run here: {where}")
        return VolumeSession(profile, Path(root), where, device)

    def sweep(self) -> list[str]:
        removed = []
        for folder, mount in _leftovers():
            pid = int(NAME.match(folder.name).group(1))
            if memcg.alive(pid):
                continue
            if memcg.remove_cgroup(folder, mount, 0.0):
                removed.append(f"removed cgroup {folder} (its process {pid} is gone)")
        return removed

    def bandwidth_cap_mb_per_s(self, profile: base.Profile) -> float | None:
        return profile.params["read_mb_per_s"]

    def expected_latency_ms(self, profile: base.Profile) -> float | None:
        return None  # a volume promises bandwidth and IOPS, not a latency


def _leftovers(max_dirs: int = 20000) -> list[tuple[Path, Path]]:
    """(folder, hierarchy root) of every imgread-<pid>-<n> cgroup: v1 at the blkio root, v2
    anywhere in the unified hierarchy (a bounded walk)."""
    out = []
    for _, point, fstype, options in memcg.mounts():
        mount = Path(point)
        if fstype == "cgroup" and "blkio" in options.split(","):
            out += [(f, mount) for f in mount.glob(f"{PREFIX}*") if NAME.match(f.name)]
        elif fstype == "cgroup2":
            seen = 0
            for dirpath, dirnames, _ in os.walk(mount):
                seen += 1
                if seen > max_dirs:
                    break
                mine = [d for d in dirnames if NAME.match(d)]
                out += [(Path(dirpath) / d, mount) for d in mine]
                dirnames[:] = [d for d in dirnames if d not in mine]
    return out


KIND = VolumeKind()
