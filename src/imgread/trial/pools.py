"""Pools and runners shared by every phase: started before the clock, closed after it.

A variant is started once (pools created and every worker proven alive: the start-up a trial
records apart), then ``run(jobs)`` does exactly the timed work and returns results keyed by
path, which the phase checks after the clock stops; ``close`` shuts pools down (untimed) and
``release`` frees what the results still referred to, once they have been checked.

A worker process that dies (killed by a signal, by the out-of-memory killer, or failing in its
initializer) ends the trial in bounded time with :class:`WorkerDied`, whose message names the
worker and the cause; the other workers are killed, none is left behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import connection

from imgread.util import end_on_sigterm

RENDEZVOUS_TIMEOUT_S = 120.0
REAP_TIMEOUT_S = 5.0  # for killed workers to be gone

_BARRIER = None  # set in each process-pool worker by init_process
_START_ERROR: str | None = None  # what the worker's initializer raised, if it did


class WorkerDied(BrokenProcessPool):
    """A worker process of the trial died or could not start; the message names it and why."""


def exit_cause(exitcode: int) -> str:
    """How a process ended, in words, from its exit code as multiprocessing reports it."""
    if exitcode >= 0:
        return f"exited with status {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if -exitcode == signal.SIGKILL:  # the kernel's out-of-memory killer sends SIGKILL
        return f"was killed by {name} (out of memory, or killed by hand)"
    return f"was killed by {name}"


def death_of(processes: Iterable, what: str = "worker process") -> str | None:
    """'<what> PID was killed by SIGKILL ...' for one of ``processes`` that has ended (one not
    ended by SIGTERM first: a pool's own clean-up ends the others so), None while they all run
    (a non-blocking ``waitpid`` each)."""
    ended = [(p, code) for p in processes if (code := p.exitcode) is not None]
    if not ended:
        return None
    p, code = next((e for e in ended if e[1] != -signal.SIGTERM), ended[0])
    return f"{what} {p.pid} {exit_cause(code)}"


def kill_all(processes: Iterable) -> None:
    """SIGKILL every process still running and wait (bounded) until each has ended."""
    processes = list(processes)
    for p in processes:
        if p.exitcode is None:
            p.kill()
    deadline = time.monotonic() + REAP_TIMEOUT_S
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))


def init_process(barrier, initializer, initargs) -> None:
    global _BARRIER, _START_ERROR
    _BARRIER = barrier
    end_on_sigterm()  # the pool ends its workers with SIGTERM: let that end them
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except Exception as exc:
        # Reported by the rendezvous the parent waits for. Left to the pool, a worker whose
        # initializer raised exits with the cause only in this log (ProcessPoolExecutor), or is
        # replaced by one that fails the same way, for as long as the parent waits
        # (multiprocessing.Pool). The others stop waiting for this one at the barrier.
        traceback.print_exc()
        _START_ERROR = "".join(traceback.format_exception_only(exc)).strip()
        barrier.abort()


def process_rendezvous() -> int:
    if _START_ERROR is not None:
        raise WorkerDied(f"worker process {os.getpid()} failed to start: {_START_ERROR}")
    _BARRIER.wait(RENDEZVOUS_TIMEOUT_S)
    return os.getpid()


def settle(waits: Iterable[Callable[[], int]], workers: int) -> set[int]:
    """Wait for every worker's rendezvous task (``waits``: one call each returning its ident);
    if any failed, raise the most telling error: a worker's own report that it could not
    start, rather than another's broken barrier."""
    idents, errors = set(), []
    for wait in waits:
        try:
            idents.add(wait())
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise next((e for e in errors if isinstance(e, WorkerDied)), errors[0])
    if len(idents) != workers:
        raise RuntimeError(f"expected {workers} distinct workers, saw {len(idents)}")
    return idents


def _prestart(
    executor: Executor, workers: int, task: Callable[[], int], submitted=lambda: None
) -> None:
    """Submit one task per worker that only returns once all are running: every worker is up.

    Pools start workers lazily; without this their creation would land inside the timed run.
    """
    futures = [executor.submit(task) for _ in range(workers)]
    submitted()
    settle((f.result for f in futures), workers)


def thread_pool(workers: int, prefix: str = "imgread") -> ThreadPoolExecutor:
    """A ThreadPoolExecutor of ``workers`` threads, every thread started."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    barrier = threading.Barrier(workers)

    def rendezvous() -> int:
        barrier.wait(RENDEZVOUS_TIMEOUT_S)
        return threading.get_ident()

    _prestart(pool, workers, rendezvous)
    return pool


def process_start_method() -> str:
    """The multiprocessing start method the process pools use (the platform default)."""
    return mp.get_start_method(allow_none=False)


class ProcessPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor that ends in bounded time when one of its workers dies.

    CPython's executor can wait forever after a death: a worker killed while it wrote a result
    leaves part of a message in the result pipe, and the executor's thread waits for the rest
    (the pipe's other writers, the survivors and this process, keep it open); a survivor may
    wait forever for a queue lock the dead one held. So a watchdog thread waits on the workers'
    sentinels: at the first death it records the cause, kills the other workers and closes this
    process's end of the result pipe; the executor's thread then reads the pipe's end, marks
    the pool broken and fails every pending future.
    """

    _cause: str | None = None
    _watchdog: threading.Thread | None = None

    def watch(self) -> None:
        """Start the watchdog (once every worker process exists)."""
        self._died = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        processes = list(self._processes.values())
        self._watchdog = threading.Thread(
            target=self._watch, args=(processes,), name="imgread-watchdog", daemon=True
        )
        self._watchdog.start()

    def _watch(self, processes: list) -> None:
        sentinels = {p.sentinel: p for p in processes}
        if not set(connection.wait([*sentinels, self._stop_r])) & set(sentinels):
            return  # stopped: a clean shutdown follows
        # Every worker ended by now (the executor's thread may have ended the others already),
        # each exit read: the executor's thread may be reaping it at the same moment.
        dead = [sentinels[s] for s in connection.wait(list(sentinels), 0)]
        deadline = time.monotonic() + 1.0
        while any(p.exitcode is None for p in dead) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._cause = death_of(dead) or f"worker process {dead[0].pid} died"
        self._died.set()
        kill_all(processes)
        if self._result_queue is not None:
            self._result_queue._writer.close()  # private: the executor's thread reads EOF

    def death(self, timeout: float = 2.0) -> str | None:
        """Why a worker died ('worker process PID was killed by ...'); None if none did."""
        if self._watchdog is None:
            return None
        self._died.wait(timeout)
        return self._cause

    def _stop_watching(self) -> None:
        if self._watchdog is None or self._stop_w < 0:
            return
        os.write(self._stop_w, b"x")
        self._watchdog.join()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._stop_w = -1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._stop_watching()
        _kill_if_broken(self)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def _kill_if_broken(pool: ProcessPoolExecutor) -> None:
    """Kill the workers of a pool broken by a dead worker: a survivor may wait forever on a
    queue lock the dead one held, and CPython's clean-up (terminate, then join) with it."""
    if pool._broken and pool._processes:  # private: no public flag
        kill_all(pool._processes.values())


def process_pool(workers: int, initializer=None, initargs=()) -> ProcessPool:
    """A ProcessPool of ``workers`` processes, every process started, initialised and watched.
    A worker that dies or whose ``initializer`` raises fails the start with WorkerDied."""
    ctx = mp.get_context()
    barrier = ctx.Barrier(workers)
    pool = ProcessPool(
        max_workers=workers,
        mp_context=ctx,
        initializer=init_process,
        initargs=(barrier, initializer, initargs),
    )
    try:
        _prestart(pool, workers, process_rendezvous, pool.watch)
    except BaseException as exc:
        error = named_death(pool, exc) if isinstance(exc, BrokenProcessPool) else None
        pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error from exc
        raise
    return pool


def named_death(pool: Executor, exc: BrokenProcessPool) -> WorkerDied:
    """The WorkerDied a pool broken by ``exc`` stands for, naming the worker and the cause."""
    if isinstance(exc, WorkerDied):
        return exc
    cause = pool.death() if isinstance(pool, ProcessPool) else None
    return WorkerDied(cause or str(exc))


def shutdown_pool(pool: Executor) -> None:
    """Shut a pool down and wait for it, in bounded time: a process pool broken by a dead
    worker has its other workers killed first."""
    if isinstance(pool, ProcessPoolExecutor):
        _kill_if_broken(pool)
    pool.shutdown(wait=True, cancel_futures=True)


class Runner:
    """A started variant: ``run`` is the timed work; ``close`` and ``release`` are untimed."""

    concurrency = 1  # requests or images in flight at once

    def run(self, jobs: list) -> dict:
        """Do the work for every job; return {path: result}."""
        raise NotImplementedError

    def died(self, exc: BaseException) -> bool:
        """True if ``exc`` reports that one of this runner's worker processes died."""
        return False

    def fields(self) -> dict:
        """Columns the runner adds to the record (read after the run, before ``close``)."""
        return {}

    def close(self) -> None:
        """Shut down whatever ``start`` created (pools); results stay readable."""

    def release(self) -> None:
        """Free what the results referred to (shared memory), after they were checked."""


class Sequential(Runner):
    """``fn(job)`` for each job, one after another, in the calling thread."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def run(self, jobs):
        return {job.path: self.fn(job) for job in jobs}


class Pooled(Runner):
    """``pool.map(fn, jobs)`` on a started pool; results stay keyed by each job's path."""

    def __init__(self, pool: Executor, fn: Callable, workers: int):
        self.pool, self.fn, self.concurrency = pool, fn, workers

    def run(self, jobs):
        try:
            return dict(zip((j.path for j in jobs), self.pool.map(self.fn, jobs), strict=True))
        except BrokenProcessPool as exc:
            raise named_death(self.pool, exc) from exc

    def close(self):
        shutdown_pool(self.pool)
