"""imgread.trial.pools on real pools: every worker started before the work, results keyed by
path, a worker's death or failed start named, nothing left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from imgread.phases.base import Job
from imgread.trial import pools
from imgread.trial.pools import Pooled, Sequential, WorkerDied


def _square(job: Job) -> int:
    return job.index * job.index


def _pid(job: Job) -> int:
    time.sleep(0.01)  # long enough that every worker takes some jobs
    return os.getpid()


def _die(job: Job) -> int:
    if job.index == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return job.index


def _refuse_to_start() -> None:
    raise ImportError("no decoder here (test)")


def _jobs(n: int) -> list[Job]:
    return [Job(f"/images/{i:03d}.jpg", i) for i in range(n)]


def test_sequential_runs_every_job_in_the_calling_thread_keyed_by_path():
    seen = []
    runner = Sequential(lambda job: seen.append(threading.get_ident()) or job.index + 1)
    out = runner.run(_jobs(5))
    assert out == {f"/images/{i:03d}.jpg": i + 1 for i in range(5)}
    assert set(seen) == {threading.get_ident()}
    assert runner.concurrency == 1 and runner.fields() == {} and not runner.died(RuntimeError())


def test_thread_pool_has_every_thread_started_before_any_work():
    pool = pools.thread_pool(4, "imgread-test")
    try:
        names = {t.name for t in threading.enumerate() if t.name.startswith("imgread-test")}
        assert len(names) == 4
        runner = Pooled(pool, _square, 4)
        assert runner.run(_jobs(6)) == {f"/images/{i:03d}.jpg": i * i for i in range(6)}
        assert runner.concurrency == 4
    finally:
        pools.shutdown_pool(pool)


def test_process_pool_starts_every_worker_and_spreads_the_work():
    pool = pools.process_pool(3)
    processes = list(pool._processes.values())
    try:
        started = {p.pid for p in processes}
        assert len(started) == 3 and os.getpid() not in started
        out = Pooled(pool, _pid, 3).run(_jobs(30))
        assert list(out) == [f"/images/{i:03d}.jpg" for i in range(30)]  # the jobs' order
        assert set(out.values()) <= started and len(set(out.values())) > 1
    finally:
        pools.shutdown_pool(pool)
    assert all(p.exitcode is not None for p in processes)  # shut down: every worker ended


def test_a_worker_whose_initializer_raises_fails_the_start_naming_it():
    with pytest.raises(WorkerDied, match=r"worker process \d+ failed to start: ImportError: no "):
        pools.process_pool(2, _refuse_to_start)


def test_a_killed_worker_ends_the_run_with_its_pid_and_signal():
    pool = pools.process_pool(2)
    pids = {p.pid for p in pool._processes.values()}
    runner = Pooled(pool, _die, 2)
    t0 = time.monotonic()
    try:
        with pytest.raises(WorkerDied) as caught:
            runner.run(_jobs(8))
    finally:
        runner.close()
    assert time.monotonic() - t0 < 30
    message = str(caught.value)
    assert "killed by SIGKILL" in message
    assert int(message.split("worker process ")[1].split()[0]) in pids
    for pid in pids:  # none left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_exit_cause_and_death_of_say_how_a_process_ended():
    assert pools.exit_cause(0) == "exited with status 0"
    assert pools.exit_cause(3) == "exited with status 3"
    assert pools.exit_cause(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert "out of memory" in pools.exit_cause(-signal.SIGKILL)
    assert pools.exit_cause(-200) == "was killed by signal 200"

    class P:
        def __init__(self, pid, exitcode):
            self.pid, self.exitcode = pid, exitcode

    assert pools.death_of([P(1, None), P(2, None)]) is None
    # one ended by the pool's own SIGTERM is not the cause where another died otherwise
    ended = [P(1, -signal.SIGTERM), P(2, -signal.SIGKILL)]
    assert pools.death_of(ended, "DataLoader worker").startswith("DataLoader worker 2 was killed")
    assert pools.death_of([P(5, -signal.SIGTERM)]) == "worker process 5 was killed by SIGTERM"


def test_settle_prefers_a_workers_own_report_over_a_broken_barrier():
    def broken():
        raise threading.BrokenBarrierError()

    def reported():
        raise WorkerDied("worker process 7 failed to start: ImportError")

    with pytest.raises(WorkerDied, match="process 7"):
        pools.settle([broken, reported, lambda: 1], 3)
    with pytest.raises(RuntimeError, match="expected 3 distinct workers, saw 2"):
        pools.settle([lambda: 1, lambda: 1, lambda: 2], 3)
    assert pools.settle([lambda: 1, lambda: 2], 2) == {1, 2}


def test_process_start_method_is_the_platforms():
    import multiprocessing as mp

    assert pools.process_start_method() == mp.get_start_method()
