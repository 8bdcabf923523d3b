"""One change to Snakemake's scheduler: at most one pending re-evaluation timer.

Snakemake 9's job-rate limiter (--max-jobs-per-timespan, default 100/1s) re-arms a one-second
timer on every scheduling pass, the passes its own timers start included: each finished job
adds a chain of timers, and after N jobs the scheduler re-selects among the ready jobs N times
a second. With hundreds of trials it holds a core while trials are timed (measured: 60 % of a
core after 30 jobs, so every trial on 2 cores counted as disturbed). One pending
re-evaluation is all the limiter needs; a job's end wakes the scheduler anyway.

The method replaced is private (``JobScheduler._schedule_reevalutation``, Snakemake's
spelling): :func:`patch` refuses, naming the Snakemake version, where it is gone or takes
other arguments, rather than patch a scheduler it does not know.
"""

from __future__ import annotations

import inspect
import threading

METHOD = "_schedule_reevalutation"
SIGNATURE = ["self", "delay"]
ATTRIBUTE = "_imgread_reevaluation"  # the pending timer, on the scheduler


class SchedulerChanged(RuntimeError):
    """Snakemake's scheduler is not the one this patch was written for."""


def one_reevaluation(self, delay) -> None:
    """Release the scheduler once after ``delay`` seconds, unless a release is pending."""
    pending = getattr(self, ATTRIBUTE, None)
    if pending is not None and pending.is_alive():
        return
    timer = threading.Timer(delay, self._open_jobs.release)
    timer.daemon = True  # never holds the run's exit
    timer.start()
    setattr(self, ATTRIBUTE, timer)


def _snakemake_version() -> str:
    try:
        import snakemake

        return getattr(snakemake, "__version__", "unknown")
    except ImportError:
        return "not installed"


def check(cls, version: str | None = None) -> None:
    """SchedulerChanged where ``cls`` has no ``METHOD`` taking exactly (self, delay)."""
    version = version or _snakemake_version()
    where = f"snakemake {version}: {cls.__module__}.{cls.__qualname__}.{METHOD}"
    method = inspect.getattr_static(cls, METHOD, None)
    if method is None:
        raise SchedulerChanged(
            f"{where} does not exist; imgread's scheduler patch (imgread.plan."
            "scheduler_patch) was written for Snakemake 9.x: update the patch for this "
            "version or install the Snakemake of constraints.txt"
        )
    if method is one_reevaluation:
        return  # patched already (the Snakefile is parsed again in the same process)
    params = list(inspect.signature(method).parameters)
    if params != SIGNATURE:
        raise SchedulerChanged(
            f"{where} takes ({', '.join(params)}), not ({', '.join(SIGNATURE)}); imgread's "
            "scheduler patch (imgread.plan.scheduler_patch) would replace a method it does "
            "not know: update the patch for this version or install the Snakemake of "
            "constraints.txt"
        )


def patch(cls=None) -> None:
    """Replace the scheduler's re-evaluation with :func:`one_reevaluation` (checked first)."""
    if cls is None:
        from snakemake.scheduling.job_scheduler import JobScheduler as cls
    check(cls)
    setattr(cls, METHOD, one_reevaluation)
