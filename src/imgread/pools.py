"""Pools and runners shared by every phase: started before the clock, closed after it.

A variant is started once (pools created and every worker proven alive: the start-up a trial
records apart), then ``run(jobs)`` does exactly the timed work and returns results keyed by
path, which the phase checks after the clock stops; ``close`` shuts pools down (untimed) and
``release`` frees what the results still referred to, once they have been checked.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

RENDEZVOUS_TIMEOUT_S = 120.0

_BARRIER = None  # set in each process-pool worker by _init_process


def _init_process(barrier, initializer, initargs) -> None:
    global _BARRIER
    _BARRIER = barrier
    # A worker inherits the trial's SIGTERM handler (raise SystemExit, for its finally blocks);
    # in a worker that exception would be caught by the pool and sent back as a task's result,
    # and the worker would live on. The pool ends its workers with SIGTERM: let that end them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def _process_rendezvous() -> int:
    _BARRIER.wait(RENDEZVOUS_TIMEOUT_S)
    return os.getpid()


def _prestart(executor: Executor, workers: int, task: Callable[[], int]) -> None:
    """Submit one task per worker that only returns once all are running: every worker is up.

    Pools start workers lazily; without this their creation would land inside the timed run.
    """
    idents = {f.result() for f in [executor.submit(task) for _ in range(workers)]}
    if len(idents) != workers:
        raise RuntimeError(f"expected {workers} distinct workers, saw {len(idents)}")


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


def process_pool(workers: int, initializer=None, initargs=()) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of ``workers`` processes, every process started and initialised."""
    ctx = mp.get_context()
    barrier = ctx.Barrier(workers)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_process,
        initargs=(barrier, initializer, initargs),
    )
    try:
        _prestart(pool, workers, _process_rendezvous)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


def shutdown_pool(pool: Executor) -> None:
    """Shut a pool down and wait for it, in bounded time. A process pool broken by a dead
    worker has its other workers killed first: one may wait forever on a queue lock the dead
    worker held, and CPython's clean-up (terminate, then join) would wait with it."""
    if isinstance(pool, ProcessPoolExecutor) and pool._broken:  # private: no public flag
        for process in list((pool._processes or {}).values()):
            if process.is_alive():
                process.kill()
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
        return dict(zip((j.path for j in jobs), self.pool.map(self.fn, jobs), strict=True))

    def close(self):
        shutdown_pool(self.pool)
