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
  and its ceiling fraction is the summary's (device bandwidth or one core x usable cores).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imgread.analysis import mean_ci
from imgread.phases.registry import PARAM_COLUMNS, PHASES

TOLERANCE = 0.05

RECOMMENDATION_COLUMNS = [
    "phase",
    "machine",
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
    "cv",
    "repetitions",
    "interfered_trials",
    "best_variant",
    "best_workers",
    "best_settings",
    "best_median",
    "as_good_as_best",
    "default_choice",
    "default_median",
    "speedup_over_default",
    "ceiling_kind",
    "ceiling_fraction",
]


def _label(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _cell_stats(g: pd.DataFrame, column: str) -> dict:
    v = g[column].to_numpy(dtype=float)
    lo, hi = mean_ci(v)
    mean = v.mean()
    return dict(
        median=float(np.median(v)),
        ci_low=lo,
        ci_high=hi,
        cv=float(v.std(ddof=1) / mean) if len(v) > 1 and mean else float("nan"),
        repetitions=len(v),
        interfered_trials=int(g["interfered"].sum()) if "interfered" in g else 0,
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
    trials: pd.DataFrame, summary: pd.DataFrame, tolerance: float = TOLERANCE
) -> pd.DataFrame:
    """One row per (phase, job), at the largest n, plus a row for each smaller n where the
    answer differs (see the module docstring)."""
    out = []
    index = ["phase", "machine", "variant", *PARAM_COLUMNS, "n_images", "workers"]
    ceilings = {
        tuple(map(str, k)): (kind, frac)
        for *k, kind, frac in summary[[*index, "ceiling_kind", "ceiling_fraction"]].itertuples(
            index=False
        )
    }
    for (phase_name, machine), pt in trials.groupby(["phase", "machine"], sort=False):
        phase = PHASES[phase_name]
        job_keys = list(phase.job_keys)
        strategy = [p.name for p in phase.params if p.name not in job_keys]
        defaults = {p.name: p.default for p in phase.params}
        groups = pt.groupby(job_keys, sort=True) if job_keys else [((), pt)]
        for job_values, jt in groups:
            job_values = job_values if isinstance(job_values, tuple) else (job_values,)
            job = dict(zip(job_keys, map(str, job_values), strict=True))
            column, higher, unit = phase.objective(job)
            rows = []
            for n, nt in jt.groupby("n_images", sort=True):
                keys = ["variant", *strategy, "workers"]
                cells = pd.DataFrame(
                    [
                        dict(zip(keys, k, strict=True), **_cell_stats(g, column))
                        for k, g in nt.groupby(keys, sort=True)
                    ]
                )
                i, b, good = choose(cells, higher, tolerance)
                pick, top = cells.iloc[i], cells.iloc[b]
                settings = {k: str(pick[k]) for k in strategy}
                base_variant, base_workers = phase.baseline
                default = _find(
                    cells, base_variant, base_workers, {k: defaults[k] for k in strategy}
                )
                default_settings = {k: defaults[k] for k in strategy}
                if default is None:  # the default settings were not measured: same settings
                    default = _find(cells, base_variant, base_workers, settings)
                    default_settings = settings
                if default is None:  # nor those: the best baseline cell that was measured
                    default = _find(cells, base_variant, base_workers, {}, best_of=higher)
                    if default is not None:
                        default_settings = {k: str(default[k]) for k in strategy}
                dmed = float(default["median"]) if default is not None else float("nan")
                key = (
                    phase_name,
                    machine,
                    pick["variant"],
                    *_cell_params(job, settings),
                    n,
                    pick["workers"],
                )
                kind, frac = ceilings.get(tuple(map(str, key)), ("-", float("nan")))
                rows.append(
                    dict(
                        phase=phase_name,
                        machine=machine,
                        job=_label(job),
                        n_images=int(n),
                        variant=pick["variant"],
                        workers=int(pick["workers"]),
                        settings=_label(settings),
                        objective=column,
                        unit=unit,
                        median=pick["median"],
                        ci_low=pick["ci_low"],
                        ci_high=pick["ci_high"],
                        cv=pick["cv"],
                        repetitions=int(pick["repetitions"]),
                        interfered_trials=int(pick["interfered_trials"]),
                        best_variant=top["variant"],
                        best_workers=int(top["workers"]),
                        best_settings=_label({k: str(top[k]) for k in strategy}),
                        best_median=top["median"],
                        as_good_as_best=good,
                        default_choice=(
                            f"{base_variant} x{base_workers}, {_label(default_settings)}"
                        ),
                        default_median=dmed,
                        speedup_over_default=(
                            pick["median"] / dmed if higher else dmed / pick["median"]
                        ),
                        ceiling_kind=kind,
                        ceiling_fraction=frac,
                    )
                )
            out.extend(_collapse(rows))
    return pd.DataFrame(out, columns=RECOMMENDATION_COLUMNS)


def _cell_params(job: dict, settings: dict) -> list[str]:
    """The cell's value of every phase's key column ('-' where this phase has none)."""
    own = {**job, **settings}
    return [own.get(c, "-") for c in PARAM_COLUMNS]


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


HOW_TO_READ = (
    "One row per job (what you need done) at the largest number of images measured, and a "
    "row for each smaller number where the answer differs. *use*: the strategy and workers to "
    "use, the fewest workers whose median is within {tol:.0%} of the best cell's; *rate*: its "
    "median over the repetitions, with the 95 % confidence interval of the mean; *as good as "
    "best*: how many cells were within {tol:.0%} (1: a clear winner); *x default*: its speedup "
    "over the phase's default choice ({default}); *of ceiling*: the fraction of what the "
    "hardware allows that it reaches (device: the disk's cold read bandwidth; cpu: one core's "
    "rate x the cores it can use; model: the consumer's own rate, i.e. the AU); *noise*: the "
    "coefficient of variation over repetitions and the repetitions another process or the "
    "hypervisor disturbed."
)


def _several_machines(rec: pd.DataFrame) -> bool:
    return rec["machine"].nunique() > 1


def _rows(rec: pd.DataFrame) -> list[list[str]]:
    out = []
    for r in rec.itertuples(index=False):
        n = f"{r.n_images}" + (f" (also {r.also_for_n})" if r.also_for_n != "-" else "")
        ci = "" if np.isnan(r.ci_low) else f" [{r.ci_low:.4g}, {r.ci_high:.4g}]"
        frac = (
            "-" if np.isnan(r.ceiling_fraction) else f"{r.ceiling_fraction:.0%} ({r.ceiling_kind})"
        )
        cv = "-" if np.isnan(r.cv) else f"CV {r.cv:.0%}"
        speed = "-" if np.isnan(r.speedup_over_default) else f"{r.speedup_over_default:.2f}"
        out.append(
            [
                *([r.machine] if _several_machines(rec) else []),
                r.phase,
                r.job,
                n,
                f"{r.variant} x{r.workers}",
                r.settings,
                f"{r.median:.4g} {r.unit}{ci}",
                str(r.as_good_as_best),
                speed,
                frac,
                f"{cv}, {r.interfered_trials}/{r.repetitions} disturbed",
            ]
        )
    return out


HEADER = [
    "phase",
    "job",
    "images",
    "use",
    "settings",
    "rate (median, 95 % CI)",
    "as good as best",
    "x default",
    "of ceiling",
    "noise",
]


def _header(rec: pd.DataFrame) -> list[str]:
    return (["machine"] if _several_machines(rec) else []) + HEADER


def how_to_read(tolerance: float = TOLERANCE) -> str:
    """The paragraph under the table."""
    return HOW_TO_READ.format(
        tol=tolerance, default="sequential, or num_workers=1, with the default settings"
    )


def markdown(rec: pd.DataFrame, study: dict | None = None, tolerance: float = TOLERANCE) -> str:
    """The recommendation as a Markdown page a person reads first."""
    from imgread.study import dataset_line, machine_line  # noqa: PLC0415

    lines = ["# What to use on this machine", ""]
    if study:
        lines += [machine_line(study) + " " + dataset_line(study).replace("``", "`"), ""]
    header = _header(rec)
    align = {"images": "---:", "as good as best": "---:", "x default": "---:", "of ceiling": "---:"}
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align.get(h, ":---") for h in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(rec)]
    return "\n".join(lines) + "\n\n" + how_to_read(tolerance) + "\n"


def rst(rec: pd.DataFrame) -> str:
    """The recommendation as a reStructuredText list-table (for the HTML report)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [_header(rec), *_rows(rec)]:
        cells = [c.replace("*", "\\*").replace("|", "/") for c in row]
        lines.append("   * - " + cells[0])
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines) + "\n"
