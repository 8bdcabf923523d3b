"""The simulated accelerator every DataLoader pipeline feeds (grid key ``accel_rate``).

DLIO's model of a training step (MLPerf Storage's benchmark): after each batch the training
process is busy for ``computation_time``; here ``samples / accel_rate`` seconds, slept in the
process that receives the batches, inside the timed epoch, so that a pipeline whose workers
prefetch keeps loading meanwhile and one that loads in the training process does not. The
accelerator utilisation is ``au = accel_busy_seconds / epoch seconds``: 1 where the data
always arrived before the accelerator wanted it. ``accel_rate`` 0 (the default) is no
consumer: the epoch is the pipeline's own rate, and nothing is slept.

Each pipeline's run loop hands every batch of its timed epoch to :meth:`Consumer.step` (or
iterates through :meth:`Consumer.feed`) inside :meth:`Consumer.epoch`; a warm-up epoch,
outside it, sleeps nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from imgread.trial.search import Outcome, SearchKey

GOAL_AU = 0.9  # MLPerf Storage's: an accelerator at least 90 % busy


class Consumer:
    """Sleeps ``samples / rate`` seconds per batch within an epoch; counts what it slept."""

    def __init__(
        self,
        rate: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if rate < 0:
            raise ValueError(f"accel_rate must be >= 0 images/s, got {rate}")
        self.rate, self.sleep, self.clock = float(rate), sleep, clock
        self.busy = self.window = 0.0
        self.batches = 0
        self.active = False

    @classmethod
    def of(cls, params: dict) -> Consumer:
        """The consumer of a trial's (resolved) params: its ``accel_rate`` (0 when absent)."""
        return cls(float(params.get("accel_rate", 0) or 0))

    @contextmanager
    def epoch(self):
        """The timed epoch: its batches are consumed, and its length is AU's denominator."""
        self.busy, self.batches, self.active = 0.0, 0, True
        start = self.clock()
        try:
            yield self
        finally:
            self.window, self.active = self.clock() - start, False

    def step(self, samples: int) -> None:
        """The accelerator's step on a batch of ``samples``: busy for samples / rate (the
        time actually slept is what counts)."""
        if not self.active or self.rate <= 0:
            return
        t0 = self.clock()
        self.sleep(samples / self.rate)
        self.busy += self.clock() - t0
        self.batches += 1

    def feed(self, batches: Iterable, size: Callable[[object], int]) -> Iterator:
        """Each batch of ``batches``, then (once the caller is done with it) its step."""
        for batch in batches:
            yield batch
            self.step(size(batch))

    def fields(self) -> dict:
        """The record's columns: the time slept and AU (NaN with no consumer)."""
        au = self.busy / self.window if self.rate > 0 and self.window > 0 else math.nan
        return {"accel_busy_seconds": self.busy, "accel_batches": self.batches, "au": au}


def batch_len(batch) -> int:
    """Samples in a batch: the length of its labels (a batch is (images, labels, ...))."""
    return len(batch[1])


def images_per_s(profile: dict) -> float | None:
    """Images/s of a config accelerator profile at 100 % busy: its images_per_s, or
    batch_size / step_s (None where it gives neither)."""
    if profile.get("images_per_s"):
        return float(profile["images_per_s"])
    if profile.get("batch_size") and profile.get("step_s"):
        return float(profile["batch_size"]) / float(profile["step_s"])
    return None


def scale(rate: float | None, accelerators: list[dict] | None) -> dict:
    """What the simulated rate is: images/s, and its share of each accelerator profile of the
    config (``accelerators:``, where it has one): AU is measured at this scaled rate."""
    out: dict = {"simulated_images_per_s": rate, "of_accelerators": {}}
    words = []
    for profile in accelerators or []:
        full = images_per_s(profile)
        if rate is None or not full:
            continue
        out["of_accelerators"][profile["name"]] = rate / full
        words.append(f"{rate / full:.1%} of one {profile['name']} ({full:,.0f} images/s)")
    out["line"] = (
        "no simulated accelerator rate passed"
        if rate is None
        else f"a simulated accelerator of {rate:,.0f} images/s"
        + (f" = {'; '.join(words)}" if words else "")
        + f", AU measured at that rate (goal AU >= {GOAL_AU:.0%})"
    )
    return out


def _bounds(unloaded: dict) -> tuple[float, float]:
    """The search's bracket from the unloaded trial's rate R0: a consumer faster than the
    pipeline cannot be fed, and one 32 times slower is fed by any (R0/32 .. R0)."""
    r0 = float(unloaded["images_per_s"])
    return max(r0 / 32, 1.0), max(r0, 1.0)


def _goal(record: dict) -> Outcome:
    """A probe passes where the accelerator was at least 90 % busy (its AU)."""
    au = float(record.get("au", math.nan))
    return Outcome(ok=au >= GOAL_AU, metric=au)


ACCEL_SEARCH = SearchKey(
    "accel_rate",
    first=0,
    bounds=_bounds,
    goal=_goal,
    integer=False,
    describe=f"the fastest simulated accelerator (images/s) kept at AU >= {GOAL_AU}",
    metric="AU",
)
