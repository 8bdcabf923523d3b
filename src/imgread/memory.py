"""Memory per trial: the peak of the whole trial (the trial process and all its workers, each
page counted once), how it was measured, and each worker's share.

What counts: the memory a strategy holds, anonymous memory (heaps, buffers, the results) and
shared memory (``/dev/shm``, mapped or not); not file pages, the page cache (the dataset's
files, a decoded cache, the code of the libraries), which the kernel can drop and which other
processes share. Counting mapped file pages would make the figure depend on the machine
rather than the strategy: a library's code is counted where the trial loaded it first, or in
the share of however many other processes map it at the time (hundreds of MB for PyTorch).

:class:`MemoryMeter` is entered before the trial starts its workers and left after it closed
them; ``start()`` runs right before the clock and ``stop()`` right after it: the peak is the
one of the timed region. Two ways, the first the machine allows:

- ``cgroup-v1``, ``cgroup-v2``: the peak of a memory cgroup the trial runs in, no sampling at
  all, less its file pages (imgread.memcg says exactly what it counts); the pages the process
  had before it moved in are counted as below, ``memory_baseline_bytes``, so the peak is that
  + the cgroup's. Besides page tables it counts the rest of the processes' kernel memory
  (kernel stacks, pipe buffers: a MB or two), which /proc does not show.
- ``pss-sampled`` (no permission, no memory controller, or ``IMGREAD_MEMORY=pss``): a thread
  sums the proportional set size of anonymous and shared memory (``Pss_Anon`` + ``Pss_Shmem``
  of ``/proc/<pid>/smaps_rollup``; ``Pss`` on kernels before 5.9, which have no split), and
  the page tables (``VmPTE``, kernel memory a cgroup counts too), over the trial process and
  its descendants (``/proc/<pid>/task/*/children``; a child that still shares its parent's
  address space, between vfork and exec, is that parent's memory), plus the shared memory
  none of them maps (a mapped page is in its PSS already): files on /dev/shm or memfds one of
  them holds open (PyTorch hands batches over so), and /dev/shm segments made since the meter
  was entered that one of them used before (in transit between processes; another program's
  are not counted), from ``start()`` to ``stop()`` (a sample at each end); the peak
  is the largest sum. PSS shares each page among the processes mapping it, so the pages the
  workers share (copy-on-write after fork, shared memory) are counted once.
  The sampler runs while the clock runs: it takes a sample every 20 ms, less often where a
  sample takes long (it never uses more than a quarter of a core: many or large processes),
  so the period is recorded as it was, the mean interval between samples; its CPU time, which
  includes the kernel's reading of /proc for it, is ``memory_sampler_cpu_s``. A peak that
  lasts less than a period can be missed: the sampled peak is a lower bound.

The record's columns:

- ``memory_method``: ``cgroup-v1``, ``cgroup-v2``, ``cgroup-v2-since-start``,
  ``pss-sampled``, or ``none`` (no /proc: nothing measured, the numbers are empty);
- ``peak_memory_bytes``: the whole trial's peak over the timed region, counted once;
- ``memory_baseline_bytes``: the trial process's own memory (as the sampler counts it) when
  the meter was entered, before it started any worker;
- ``memory_per_worker_bytes``: (``peak_memory_bytes`` - ``memory_baseline_bytes``) /
  workers, what the workers and the work (their buffers, the results the trial process holds,
  the libraries it imports to start them) added to the process as it was before the workers
  started, per worker; empty for 0 workers;
- ``memory_sample_period_s``, ``memory_sampler_cpu_s``: the sampler's mean period and CPU
  time (empty for a cgroup).
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import stat
import threading
import time
from functools import cache
from pathlib import Path

from imgread.errors import UserError
from imgread.memcg import TrialCgroup

DEFAULT_PERIOD_S = 0.02
MAX_DUTY = 0.25  # the sampler waits at least 3x the CPU time its last sample took
METHOD_ENV = "IMGREAD_MEMORY"  # "auto" (default) or "pss"
PROC = Path("/proc")
SHM = Path("/dev/shm")
SHARED = (f"{SHM}/", "/memfd:")  # where shared memory lives, as /proc links name it
_PSS = re.compile(rb"^(Pss|Pss_Anon|Pss_Shmem):\s+(\d+) kB", re.MULTILINE)
_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272}.get(platform.machine())
_KCMP_VM = 1


# -- /proc: PSS of a process tree, shared-memory segments


def pss_bytes(pid: int) -> int | None:
    """The process's proportional set size of anonymous and shared memory (smaps_rollup's
    Pss_Anon + Pss_Shmem; all of Pss where the kernel has no split); None where it is gone."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    kb = {k: int(v) for k, v in _PSS.findall(text)}
    if b"Pss_Anon" in kb:
        return (kb[b"Pss_Anon"] + kb.get(b"Pss_Shmem", 0)) * 1024
    return kb[b"Pss"] * 1024 if b"Pss" in kb else None


def page_table_bytes(pid: int) -> int:
    """The process's page tables (VmPTE of /proc/<pid>/status): kernel memory, its own."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmPTE:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def process_memory(pid: int) -> int | None:
    """What the meter counts of one process: :func:`pss_bytes` + its page tables."""
    pss = pss_bytes(pid)
    return None if pss is None else pss + page_table_bytes(pid)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, made by any of its threads."""
    kids: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return kids
    for task in tasks:
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return kids


def same_memory(a: int, b: int) -> bool:
    """True where processes ``a`` and ``b`` share one address space (a vfork child before its
    exec): kcmp(2), where the kernel has it."""
    if _KCMP is None:
        return False
    return _libc().syscall(_KCMP, a, b, _KCMP_VM, 0, 0) == 0


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, each address space once (a child sharing its parent's, as
    between vfork and exec, left out)."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(k for k in children(p) if not same_memory(p, k))
    return tree


def shm_segments() -> dict[tuple[str, int], int]:
    """{(name, inode): bytes allocated} of every file in /dev/shm."""
    out = {}
    try:
        entries = list(os.scandir(SHM))
    except OSError:
        return out
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        out[(e.name, st.st_ino)] = st.st_blocks * 512
    return out


def held_shared(pids: list[int]) -> tuple[dict[int, int], set[str]]:
    """The shared-memory files (on /dev/shm, or memfds) the processes hold open: ({inode:
    bytes allocated}, their names)."""
    held, names = {}, set()
    for pid in pids:
        folder = PROC / str(pid) / "fd"
        try:
            fds = os.listdir(folder)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(folder / fd)
                st = os.stat(folder / fd) if target.startswith(SHARED) else None
            except OSError:
                continue  # closed meanwhile
            if st is not None and stat.S_ISREG(st.st_mode):
                held[st.st_ino] = st.st_blocks * 512
                names.add(_name(target))
    return held, names


def mapped_shared(pids: list[int]) -> tuple[set[int], set[str]]:
    """The shared-memory files the processes map: (their inodes, their names)."""
    mapped, names = set(), set()
    for pid in pids:
        try:
            maps = (PROC / str(pid) / "maps").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith(SHARED):
                mapped.add(int(parts[4]))
                names.add(_name(parts[5]))
    return mapped, names


def _name(path: str) -> str:
    return path.removesuffix(" (deleted)").rpartition("/")[2]


def tree_memory(pid: int, before: dict[tuple[str, int], int], seen: set[str]) -> int:
    """Sum of :func:`process_memory` over ``pid``'s tree, plus the shared memory in no PSS:
    files the tree holds open but none of it maps, and /dev/shm segments not in ``before``
    that none of it maps or holds but that it used before (``seen``: in transit)."""
    pids = process_tree(pid)
    total = sum(filter(None, (process_memory(p) for p in pids)))
    held, names = held_shared(pids)
    new = {k: b for k, b in shm_segments().items() if k not in before}
    if not held and not new:
        return total  # no shared memory to look for (and no maps to read)
    mapped, mapped_names = mapped_shared(pids)
    seen |= names | mapped_names
    total += sum(b for ino, b in held.items() if ino not in mapped)
    return total + sum(
        b
        for (name, ino), b in new.items()
        if name in seen and ino not in mapped and ino not in held
    )


# -- the sampler


class Sampler(threading.Thread):
    """Samples :func:`tree_memory` every ``period_s`` until stopped (once more then); keeps
    the peak and its own CPU time."""

    def __init__(self, pid: int, period_s: float, before: dict) -> None:
        super().__init__(name="imgread-memory-sampler", daemon=True)
        self.pid, self.period_s, self.before = pid, period_s, before
        self.seen: set[str] = set()  # the shared-memory names the trial used
        self.peak: int | None = None
        self.times: list[float] = []
        self.cpu_s = 0.0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._first = threading.Event()

    def _sample(self) -> float:
        """Take a sample; how long until the next one is due."""
        began, cpu = time.monotonic(), time.thread_time()
        value = tree_memory(self.pid, self.before, self.seen)
        self.peak = value if self.peak is None else max(self.peak, value)
        self.times.append(began)
        took, cpu = time.monotonic() - began, time.thread_time() - cpu
        return max(self.period_s - took, cpu * (1 / MAX_DUTY - 1))

    @property
    def mean_period_s(self) -> float | None:
        """The mean interval between samples, as they were taken."""
        t = self.times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None

    def run(self) -> None:
        start = time.thread_time()
        try:
            while True:
                wait = self._sample()
                self._first.set()
                if self._stop_event.wait(wait):
                    self._sample()
                    return
        except BaseException as exc:  # noqa: BLE001 (reported as no measurement)
            self.error = exc
        finally:
            self.cpu_s = time.thread_time() - start
            self._first.set()

    def begin(self) -> None:
        """Start, and return once the first sample is taken."""
        self.start()
        self._first.wait()

    def end(self) -> None:
        """Stop (after one last sample) and wait for the thread."""
        self._stop_event.set()
        if self.is_alive():
            self.join()


# -- the meter


class MemoryMeter:
    """The trial's memory (module docstring): ``with MemoryMeter(workers) as m:`` around the
    start of the workers to their close, ``m.start()`` right before the clock and
    ``m.stop()`` right after it, which returns the record's columns."""

    def __init__(self, workers: int, period_s: float = DEFAULT_PERIOD_S, method: str = "") -> None:
        self.workers = workers
        self.period_s = period_s
        self.want = method or os.environ.get(METHOD_ENV, "auto")
        if self.want not in ("auto", "pss"):
            raise UserError(f"{METHOD_ENV} must be 'auto' or 'pss', got {self.want!r}")
        self.pid = os.getpid()
        self.failed = False  # the cgroup's peak could not be reset
        self.baseline: int | None = None
        self.cgroup: TrialCgroup | None = None
        self.sampler: Sampler | None = None
        self._segments: dict = {}

    @property
    def method(self) -> str:
        if self.cgroup is not None:
            return self.cgroup.method
        return "none" if self.baseline is None else "pss-sampled"

    def __enter__(self) -> MemoryMeter:
        self.baseline = process_memory(self.pid)
        self._segments = shm_segments()
        if self.baseline is not None and self.want == "auto":
            self.cgroup = TrialCgroup.enter(self.pid)
        return self

    def start(self) -> None:
        """Right before the clock: reset the cgroup's peak, or start sampling."""
        if self.cgroup is not None:
            try:
                self.cgroup.reset()
            except OSError:
                self.failed = True
        elif self.baseline is not None:
            self.sampler = Sampler(self.pid, self.period_s, self._segments)
            self.sampler.begin()

    def stop(self) -> dict:
        """Right after the clock: read the peak; the record's columns."""
        peak = None
        try:
            if self.cgroup is not None and not self.failed:
                peak = self.baseline + self.cgroup.peak_added()
            elif self.sampler is not None:
                self.sampler.end()
                peak = self.sampler.peak if self.sampler.error is None else None
        except (OSError, ValueError, KeyError, IndexError):
            peak = None  # no number rather than a wrong one; the trial itself stands
        return self.columns(peak)

    def columns(self, peak: int | None) -> dict:
        """The record's memory columns for ``peak`` (module docstring)."""
        sampled = self.sampler is not None
        added = peak - self.baseline if peak is not None and self.baseline is not None else None
        return dict(
            memory_method=self.method,
            peak_memory_bytes=peak,
            memory_baseline_bytes=self.baseline,
            memory_per_worker_bytes=(
                added / self.workers if added is not None and self.workers > 0 else None
            ),
            memory_sample_period_s=self.sampler.mean_period_s if sampled else None,
            memory_sampler_cpu_s=self.sampler.cpu_s if sampled else None,
        )

    def __exit__(self, *exc) -> None:
        """Stop sampling; move back and remove the cgroup, whatever ended the trial."""
        try:
            if self.sampler is not None:
                self.sampler.end()
        finally:
            if self.cgroup is not None:
                self.cgroup.leave()
