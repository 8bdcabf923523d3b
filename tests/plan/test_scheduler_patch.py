"""The one patch of Snakemake's scheduler (imgread.plan.scheduler_patch): refused, naming the
Snakemake version, where the private method is gone or takes other arguments; and on the
installed Snakemake's own class, many re-evaluations asked leave one timer pending."""

from __future__ import annotations

import threading
import time

import pytest
import snakemake
from snakemake.scheduling.job_scheduler import JobScheduler

from imgread.plan import scheduler_patch
from imgread.plan.scheduler_patch import METHOD, SchedulerChanged, check, one_reevaluation


def test_a_renamed_method_is_refused_naming_the_snakemake_version():
    class Renamed:
        def _schedule_reevaluation(self, delay):  # the typo fixed upstream: ours is gone
            pass

    with pytest.raises(SchedulerChanged) as err:
        scheduler_patch.patch(Renamed)
    assert f"snakemake {snakemake.__version__}" in str(err.value)
    assert f"Renamed.{METHOD} does not exist" in str(err.value)
    assert not hasattr(Renamed, METHOD)  # nothing patched


def test_a_changed_signature_is_refused(monkeypatch):
    class Changed:
        def _schedule_reevalutation(self, delay, reason):
            pass

    with pytest.raises(
        SchedulerChanged, match=r"takes \(self, delay, reason\), not \(self, delay\)"
    ):
        scheduler_patch.patch(Changed)
    assert Changed._schedule_reevalutation is not one_reevaluation
    # the version named is the installed one's (here: a pretend one)
    monkeypatch.setattr(snakemake, "__version__", "10.0.0", raising=False)
    with pytest.raises(SchedulerChanged, match="snakemake 10.0.0: "):
        check(Changed)


def test_the_installed_scheduler_has_the_method_the_patch_replaces():
    check(JobScheduler)  # raises where a Snakemake upgrade changed it


class _Bare:
    """The attributes of JobScheduler the patched method uses, without a workflow."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def test_many_reevaluations_leave_one_pending_on_the_real_class(monkeypatch):
    monkeypatch.setattr(JobScheduler, METHOD, JobScheduler.__dict__[METHOD])  # restored after
    started = []
    real_start = threading.Timer.start

    def counted(timer):
        started.append(timer)
        real_start(timer)

    monkeypatch.setattr(threading.Timer, "start", counted)
    scheduler = JobScheduler.__new__(JobScheduler)
    scheduler.__dict__.update(vars(_Bare()))
    # unpatched: every call arms its own timer (the chain the patch stops)
    for _ in range(5):
        getattr(scheduler, METHOD)(0.2)
    assert len(started) == 5
    for t in started:
        t.cancel()
    started.clear()
    scheduler_patch.patch(JobScheduler)
    assert JobScheduler.__dict__[METHOD] is one_reevaluation
    for _ in range(50):
        getattr(scheduler, METHOD)(0.2)
    assert len(started) == 1 and started[0].daemon
    # the one release comes, and then a new call arms a new timer
    assert scheduler._open_jobs.acquire(timeout=5)
    started[0].join(timeout=5)
    getattr(scheduler, METHOD)(0.01)
    assert len(started) == 2
    time.sleep(0.05)
    assert scheduler._open_jobs.acquire(timeout=5)
    scheduler_patch.patch(JobScheduler)  # again (the Snakefile parsed twice): accepted
