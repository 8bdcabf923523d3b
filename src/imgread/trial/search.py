"""A bounded search over one grid key: the highest value whose measured trial meets a goal.

Used for what a person plans with, measured rather than extrapolated: the fastest simulated
accelerator a DataLoader pipeline keeps at least 90 % busy (key ``accel_rate``), the most
camera streams a producer sustains within the frame deadline (key ``streams``). Each probe is
one complete trial (a fresh start, the cache proven, checked after the clock); the search only
chooses the next value. A phase declares what it can search in ``Phase.search_keys``.

The search assumes the goal is monotone in the value (met below some threshold, missed above
it), which holds for a consumer's rate and a stream count; a noisy probe near the threshold
can still pass where its neighbour failed, so the result is the highest value *measured* to
pass, never interpolated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    """What one probe measured: whether the goal was met and the figure judged."""

    ok: bool
    metric: float  # e.g. AU, or the p99 latency in ms
    record: dict | None = None  # the trial's record (or its summary), for the search's file


@dataclass(frozen=True)
class SearchKey:
    """One searchable key of a phase: the value probed first, how the search's bracket follows
    from that first probe's record, and the goal a probe's record must meet.

    ``bounds(first_record)`` returns ``(lo, hi)``; ``hi`` None means no upper bound is known
    (the search doubles from ``lo``). ``goal(record)`` returns an :class:`Outcome`."""

    name: str
    first: float
    bounds: Callable[[dict], tuple[float, float | None]]
    goal: Callable[[dict], Outcome]
    integer: bool = False
    describe: str = ""
    metric: str = "metric"  # what Outcome.metric is, in the search's progress lines ("AU")


@dataclass
class Result:
    """The search's answer and every probe it made, in order."""

    best: float | None  # the highest value measured to pass; None if none did
    probes: list[tuple[float, Outcome]] = field(default_factory=list)
    exhausted: bool = False  # the probe budget ran out before the bracket closed

    def rows(self) -> list[dict]:
        """One dict per probe (value, ok, metric), in the order probed."""
        return [{"value": v, "ok": o.ok, "metric": o.metric} for v, o in self.probes]


def highest_passing(
    probe: Callable[[float], Outcome],
    lo: float,
    hi: float | None,
    *,
    max_probes: int,
    integer: bool = False,
    resolution: float = 1.05,
) -> Result:
    """The highest value in ``[lo, hi]`` whose probe passes, in at most ``max_probes`` probes.

    ``hi`` is probed first (if it passes, nothing higher is asked); then the bracket is halved
    from above, geometrically for rates (``integer`` False: stops once hi/lo is within
    ``resolution``), by integers for counts (stops when the two are adjacent). ``lo`` itself
    is never probed first: a probe's cost grows as the rate falls (a consumer at rate r
    sleeps n / r), so the search spends its budget near the answer; where every probe fails
    the answer is None. With ``hi`` None the search doubles from ``lo`` until a probe fails."""
    if max_probes < 1:
        raise ValueError(f"max_probes must be at least 1, not {max_probes}")
    if lo <= 0 or (hi is not None and hi < lo):
        raise ValueError(f"the bracket [{lo}, {hi}] must be positive and ordered")
    out = Result(best=None)

    def ask(value: float) -> bool:
        value = int(round(value)) if integer else float(value)
        outcome = probe(value)
        out.probes.append((value, outcome))
        if outcome.ok and (out.best is None or value > out.best):
            out.best = value
        return outcome.ok

    def budget() -> bool:
        return len(out.probes) < max_probes

    passing, failing = _bracket(ask, budget, lo, hi, integer)
    if passing is None or failing is None:
        return out
    while budget() and not _closed(passing, failing, integer, resolution):
        middle = (passing + failing) // 2 if integer else (passing * failing) ** 0.5
        if ask(middle):
            passing = middle
        else:
            failing = middle
    if passing == lo and out.best is None and budget():
        ask(lo)  # everything above failed: the bottom itself, measured, not assumed
    out.exhausted = not _closed(passing, failing, integer, resolution)
    return out


def _bracket(ask, budget, lo, hi, integer):
    """(the bracket's bottom, lowest failing) after the opening probes; None where the search
    is over already (the top passed, the bottom failed, or the budget ran out)."""
    if hi is not None:
        if ask(hi) or not budget():
            return None, None  # nothing higher is asked for, or nothing more can be
        return lo, hi  # lo not yet measured: the halving from above reaches it if it must
    value = lo
    if not ask(value):
        return None, None
    while budget():
        higher = value * 2
        if not ask(higher):
            return value, higher
        value = higher
    return None, None


def _closed(passing: float, failing: float, integer: bool, resolution: float) -> bool:
    if integer:
        return failing - passing <= 1
    return failing / passing <= resolution
