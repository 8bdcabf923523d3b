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
  all, less its file pages (imgread.instruments.memcg says exactly what it counts); the pages the
  process
  had before it moved in are counted as below, ``memory_baseline_bytes``, so the peak is that
  + the cgroup's. Besides page tables it counts the rest of the processes' kernel memory
  (kernel stacks, pipe buffers: a MB or two), which /proc does not show.
- ``pss-sampled`` (no permission, no memory controller, or ``IMGREAD_MEMORY=pss``): a thread
  sums over the trial process and its descendants (``/proc/<pid>/task/*/children``; a child
  that still shares its parent's address space, between vfork and exec, is that parent's
  memory) the proportional set size of anonymous memory (``Pss_Anon`` of
  ``/proc/<pid>/smaps_rollup``; all of ``Pss`` on kernels before 5.9, which have no split)
  and the page tables (``VmPTE``, kernel memory a cgroup counts too), plus the shared memory
  the trial uses: mapped pages (``Pss_Shmem``), and the shared-memory files it holds open or
  maps by the pages they have allocated, /dev/shm segments it used that are in transit
  between its processes included, another program's not (imgread.instruments.procmem says how), from
  ``start()`` to ``stop()`` (a sample at each end); the peak is the largest sum. PSS shares
  each page among the processes mapping it, so the pages the workers share (copy-on-write
  after fork, shared memory) are counted once.
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

import os
import threading
import time

from imgread.errors import UserError
from imgread.instruments.memcg import TrialCgroup
from imgread.instruments.procmem import process_memory, shm_segments, tree_memory

DEFAULT_PERIOD_S = 0.02
MAX_DUTY = 0.25  # the sampler waits at least 3x the CPU time its last sample took
METHOD_ENV = "IMGREAD_MEMORY"  # "auto" (default) or "pss"


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
