"""The answer per job: which strategy and how many workers to use, how fast it is, how far
from the ceiling, and how sure we are.

A *job* is a phase with the keys that say what the user needs done (decode to 224 crops and
hand the pixels over; a DataLoader of batch 32 from a cold cache; 60 fps into a 10 ms model).
Everything else (variant, workers, decoder, source, ...) is a *strategy*. Per job and n:

- every strategy cell is ranked by the median of the phase's objective over its repetitions
  (MB/s, megapixels/s, images/s, frames/s; p99 latency at a frame rate, lower is better);
- the cells whose median is within ``tolerance`` (5 %) of the best are as good as the best;
  of those the one with the fewest workers is recommended (fewer cores, same result), ties
  broken by the better median. Medians, not means, so one disturbed repetition cannot make a
  cell win, and not a confidence-interval overlap, because a noisy cell's wide interval would
  make a much slower cell look as good as the best;
- its speedup is over the phase's default choice (the baseline variant with the phase's
  default settings, or with the recommended settings where the default was not measured),
  and its ceiling fraction is the summary's (device bandwidth or one core x usable cores),
  with the one-core rate it was built from (a fraction above 1 is kept and explained);
- its interval is stats.rate_ci (a t-interval on log(rate), never below zero), and only with
  at least MIN_REPETITIONS (3) repetitions: with fewer, ``ci_low``/``ci_high`` are NaN,
  ``too_few_repetitions`` is True and the table says so;
- ``x_imagefolder`` (the DataLoader's rows): its speedup over the best cell of
  ``torchvision-imagefolder`` in the same job, seed 000's own code and what its user starts
  from (the phase's ``starting_point``); NaN where that was not measured (on object stores it
  reads no folder: it stays local);
- ``retries`` counts the reads its trials retried (a failing storage server: imgread.storage.
  http); where it is not 0 the table flags it, since the rate includes their backoff.

With ``analysis.memory_budget`` (bytes) the same rule is applied among the cells whose median
peak memory (imgread.instruments.memory: the whole trial, the process and its workers, counted
once) is
within the budget; the row gives the memory of its answer, and what the answer would be without
the budget where that changed it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imgread.answer.keys import CELL, NO_PARAM
from imgread.answer.stats import rate_ci, retries_of
from imgread.answer.text import MIN_REPETITIONS, TOLERANCE, how_to_read, markdown, rst
from imgread.phases.base import Phase
from imgread.phases.registry import PARAM_COLUMNS, PHASES

# The recommendation as text lives in imgread.answer.text (the study's captions use it too).
__all__ = [
    "MIN_REPETITIONS",
    "RECOMMENDATION_COLUMNS",
    "TOLERANCE",
    "choose",
    "how_to_read",
    "markdown",
    "recommend",
    "rst",
]

RECOMMENDATION_COLUMNS = [
    "phase",
    "machine",
    "dataset",
    "job",
    "n_images",
    "also_for_n",
    "variant",
    "workers",
    "settings",
    "objective",
    "unit",
    "median",
    "ci_low",
    "ci_high",
    "too_few_repetitions",
    "cv",
    "repetitions",
    "interfered_trials",
    "retries",
    "best_variant",
    "best_workers",
    "best_settings",
    "best_median",
    "as_good_as_best",
    "default_choice",
    "default_median",
    "speedup_over_default",
    "x_imagefolder",
    "memory_bytes",
    "memory_budget_bytes",
    "budget_changed_answer",
    "without_budget",
    "without_budget_memory_bytes",
    "ceiling_kind",
    "ceiling_fraction",
    "ceiling_one_core_images_per_s",
    "ceiling_one_core_repetitions",
]
# The summary's ceiling columns, as a cell without one has them.
NO_CEILING = dict(
    ceiling_kind="-",
    ceiling_fraction=float("nan"),
    ceiling_one_core_images_per_s=float("nan"),
    ceiling_one_core_repetitions=0,
)
CEILING = list(NO_CEILING)


def _told(phase: Phase, variant: str, settings: dict[str, str]) -> dict[str, str]:
    """The settings worth saying for ``variant``: not a key the variant takes one value of
    (the load phase's in_flight is asyncio's; the others' workers are their requests)."""
    fixed = {k for k, allowed in phase.variants[variant].allowed.items() if len(allowed) == 1}
    return {k: v for k, v in _unsaid_later(phase, settings).items() if k not in fixed}


def _unsaid_later(phase: Phase, params: dict[str, str]) -> dict[str, str]:
    """Less the keys added later (Param.later) at their default: what a row measured before
    them, and one that sets them to nothing, both mean (no streams=1, no accel_rate=0)."""
    later = {p.name: p.default for p in phase.params if p.later}
    return {k: v for k, v in params.items() if not (k in later and str(v) == later[k])}


def _label(params: dict[str, str]) -> str:
    # A key a row does not have ("-": a record made before the key existed) is left out.
    return ", ".join(f"{k}={v}" for k, v in params.items() if v != NO_PARAM) or "-"


def _cell_stats(g: pd.DataFrame, column: str) -> dict:
    v = g[column].to_numpy(dtype=float)
    too_few = len(v) < MIN_REPETITIONS
    lo, hi = (float("nan"), float("nan")) if too_few else rate_ci(v)
    mean = v.mean()
    return dict(
        median=float(np.median(v)),
        ci_low=lo,
        ci_high=hi,
        too_few_repetitions=too_few,
        cv=float(v.std(ddof=1) / mean) if len(v) > 1 and mean else float("nan"),
        repetitions=len(v),
        interfered_trials=int(g["interfered"].sum()) if "interfered" in g else 0,
        retries=retries_of(g),
    )


def choose(cells: pd.DataFrame, higher: bool, tolerance: float = TOLERANCE) -> tuple[int, int, int]:
    """Row positions (chosen, best, how many are as good as the best) in ``cells`` (columns
    ``median`` and ``workers``)."""
    med = cells["median"].to_numpy(dtype=float)
    best = int(np.nanargmax(med) if higher else np.nanargmin(med))
    bound = med[best] * (1 - tolerance) if higher else med[best] * (1 + tolerance)
    good = np.flatnonzero(med >= bound if higher else med <= bound)
    order = sorted(good, key=lambda i: (cells["workers"].iloc[i], -med[i] if higher else med[i]))
    return int(order[0]), best, len(good)


def recommend(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    tolerance: float = TOLERANCE,
    memory_budget: float | None = None,
) -> pd.DataFrame:
    """One row per (phase, job), at the largest n, plus a row for each smaller n where the
    answer differs (see the module docstring); with a ``memory_budget`` (bytes), the answer
    is chosen among the cells whose median peak memory is within it (:func:`_budgeted`)."""
    out = []
    ceilings = {
        tuple(map(str, r[: len(CELL)])): dict(zip(CEILING, r[len(CELL) :], strict=True))
        for r in summary.reindex(columns=[*CELL, *CEILING]).itertuples(index=False)
    }
    groups = trials.groupby(["phase", "machine", "dataset"], sort=False)
    for (phase_name, machine, dataset), pt in groups:
        phase = PHASES[phase_name]
        for job, jt in _jobs(phase, pt):
            rows = [
                _answer(phase, (machine, dataset), job, n, nt, tolerance, ceilings, memory_budget)
                for n, nt in jt.groupby("n_images", sort=True)
            ]
            out.extend(_collapse(rows))
    return pd.DataFrame(out, columns=RECOMMENDATION_COLUMNS)


def _jobs(phase: Phase, trials: pd.DataFrame):
    """(job: {job key: value}, its trials) for each job of the phase's ``trials``."""
    job_keys = list(phase.job_keys)
    groups = trials.groupby(job_keys, sort=True) if job_keys else [((), trials)]
    for job_values, jt in groups:
        job_values = job_values if isinstance(job_values, tuple) else (job_values,)
        yield dict(zip(job_keys, map(str, job_values), strict=True)), jt


def _strategy(phase: Phase) -> list[str]:
    """The phase's params that are a strategy to choose (not part of the job)."""
    return [p.name for p in phase.params if p.name not in phase.job_keys]


def _answer(
    phase: Phase,
    where: tuple[str, str],
    job: dict,
    n,
    trials: pd.DataFrame,
    tolerance: float,
    ceilings: dict,
    memory_budget: float | None = None,
) -> dict:
    """The recommendation row of one job at ``n`` images on ``where`` (machine, dataset),
    from its ``trials``."""
    machine, dataset = where
    column, higher, unit = phase.objective(job)
    strategy = _strategy(phase)
    keys = ["variant", *strategy, "workers"]
    cells = pd.DataFrame(
        [
            dict(zip(keys, k, strict=True), **_cell_stats(g, column), memory=_memory(g))
            for k, g in trials.groupby(keys, sort=True)
        ]
    )
    within, budget = _budgeted(cells, higher, tolerance, memory_budget, strategy)
    i, b, good = choose(within, higher, tolerance)
    pick, top = within.iloc[i], within.iloc[b]
    settings = {k: str(pick[k]) for k in strategy}
    default, default_settings = _default(phase, cells, settings, higher)
    dmed = float(default["median"]) if default is not None else float("nan")
    key = (
        phase.name,
        machine,
        dataset,
        pick["variant"],
        *_cell_params(job, settings),
        n,
        pick["workers"],
    )
    ceiling = ceilings.get(tuple(map(str, key)), NO_CEILING)
    base_variant, base_workers = phase.baseline
    return dict(
        phase=phase.name,
        machine=machine,
        dataset=dataset,
        job=_label(_unsaid_later(phase, job)),
        n_images=int(n),
        variant=pick["variant"],
        workers=int(pick["workers"]),
        settings=_label(_told(phase, pick["variant"], settings)),
        objective=column,
        unit=unit,
        **_pick_stats(pick),
        best_variant=top["variant"],
        best_workers=int(top["workers"]),
        best_settings=_label({k: str(top[k]) for k in strategy}),
        best_median=top["median"],
        as_good_as_best=good,
        default_choice=f"{base_variant} x{base_workers}, {_label(default_settings)}",
        default_median=dmed,
        speedup_over_default=pick["median"] / dmed if higher else dmed / pick["median"],
        x_imagefolder=_over_start(phase, cells, pick["median"], higher),
        memory_bytes=pick["memory"],
        **budget,
        **ceiling,
    )


def _pick_stats(pick) -> dict:
    """The chosen cell's median, interval and noise columns."""
    return dict(
        median=pick["median"],
        ci_low=pick["ci_low"],
        ci_high=pick["ci_high"],
        too_few_repetitions=bool(pick["too_few_repetitions"]),
        cv=pick["cv"],
        repetitions=int(pick["repetitions"]),
        interfered_trials=int(pick["interfered_trials"]),
        retries=int(pick["retries"]),
    )


def _over_start(phase: Phase, cells: pd.DataFrame, median: float, higher: bool) -> float:
    """The answer's speedup over the best cell of the phase's ``starting_point`` variant in
    the same job; NaN where the phase has none or it was not measured."""
    start = phase.starting_point
    if start is None or not (cells["variant"] == start).any():
        return float("nan")
    theirs = cells.loc[cells["variant"] == start, "median"].to_numpy(dtype=float)
    best = np.nanmax(theirs) if higher else np.nanmin(theirs)
    return float(median / best if higher else best / median)


def _memory(g: pd.DataFrame) -> float:
    """A cell's median peak memory (imgread.instruments.memory); NaN where its records have none."""
    if "peak_memory_bytes" not in g:
        return float("nan")
    return float(pd.to_numeric(g["peak_memory_bytes"]).median())


def _budgeted(cells: pd.DataFrame, higher: bool, tolerance: float, budget, strategy: list):
    """(the cells the usual rule chooses among, the row's budget columns): with a budget, the
    cells whose median peak memory is within it (all of them where none is: the row's
    ``memory_bytes`` then shows the budget was not met), and what the answer would be
    without it; ``budget_changed_answer`` where the two differ."""
    cols = dict(
        memory_budget_bytes=float("nan"),
        budget_changed_answer=False,
        without_budget="-",
        without_budget_memory_bytes=float("nan"),
    )
    if budget is None:
        return cells, cols
    free = choose(cells, higher, tolerance)[0]
    row = cells.iloc[free]
    cols.update(
        memory_budget_bytes=float(budget),
        without_budget=f"{row['variant']} x{row['workers']}, "
        + _label({k: str(row[k]) for k in strategy}),
        without_budget_memory_bytes=float(row["memory"]),
    )
    fits = cells["memory"] <= budget
    if not fits.any():
        return cells, cols
    within = cells[fits]
    chosen = within.index[choose(within, higher, tolerance)[0]]
    cols["budget_changed_answer"] = bool(chosen != cells.index[free])
    return within, cols


def _default(phase: Phase, cells: pd.DataFrame, settings: dict, higher: bool):
    """(the cell of the phase's default choice or None, its settings): the baseline variant
    with the default settings, else with the recommended ``settings``, else the best baseline
    cell that was measured."""
    base_variant, base_workers = phase.baseline
    defaults = {p.name: p.default for p in phase.params}
    default_settings = {k: defaults[k] for k in _strategy(phase)}
    default = _find(cells, base_variant, base_workers, default_settings)
    if default is None:  # the default settings were not measured: same settings
        default = _find(cells, base_variant, base_workers, settings)
        default_settings = settings
    if default is None:  # nor those: the best baseline cell that was measured
        default = _find(cells, base_variant, base_workers, {}, best_of=higher)
        if default is not None:
            default_settings = {k: str(default[k]) for k in _strategy(phase)}
    return default, default_settings


def _cell_params(job: dict, settings: dict) -> list[str]:
    """The cell's value of every phase's key column ('-' where this phase has none)."""
    own = {**job, **settings}
    return [own.get(c, NO_PARAM) for c in PARAM_COLUMNS]


def _find(cells: pd.DataFrame, variant: str, workers: int, settings: dict, best_of=None):
    """The cell with this variant, workers and settings (the best median of several if
    ``best_of`` is True/False for higher/lower is better); None if none was measured."""
    mask = (cells["variant"] == variant) & (cells["workers"] == workers)
    for k, v in settings.items():
        mask &= cells[k].astype(str) == str(v)
    if not mask.any():
        return None
    found = cells[mask].sort_values("median", ascending=best_of is False)
    return found.iloc[0]


def _collapse(rows: list[dict]) -> list[dict]:
    """The largest n's row, and the rows of smaller n whose answer differs from it; each row
    lists the other n with the same answer."""
    if not rows:
        return []

    def answer(r):
        return (r["variant"], r["workers"], r["settings"])

    last = rows[-1]
    keep = [r for r in rows[:-1] if answer(r) != answer(last)] + [last]
    for r in keep:
        same = [x["n_images"] for x in rows if answer(x) == answer(r) and x is not r]
        r["also_for_n"] = ", ".join(map(str, same)) or "-"
    return keep
