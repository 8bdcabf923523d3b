"""The statistics of the trials: per-cell summaries, baselines, speedup with bootstrap CIs,
ceiling fractions and the interference flags.

All statistics are explicit: n, mean, median, std (ddof=1), min, max and a Student-t 95 %
confidence interval of the mean time; speedup = mean sequential time / mean variant time at
the same phase and n, with a percentile bootstrap interval over repetitions; the answer's
rates get rate_ci, a t-interval on log(rate) that never goes below zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from imgread.answer.keys import BASELINE_KEYS, CELL
from imgread.phases.registry import PHASES

SUMMARY_COLUMNS = CELL + [
    "repetitions",
    "mean_seconds",
    "median_seconds",
    "std_seconds",
    "min_seconds",
    "max_seconds",
    "ci_low_seconds",
    "ci_high_seconds",
    "mean_startup_seconds",
    "mean_total_seconds",
    "mean_mb_per_s",
    "mean_megapixels_per_s",
    "mean_images_per_s",
    "cv",
    "median_mb_per_s",
    "median_megapixels_per_s",
    "median_images_per_s",
    "interfered_trials",
    "median_interference_fraction",
    "median_peak_memory_bytes",
    "median_memory_per_worker_bytes",
    "retries",
    "ceiling_kind",
    "ceiling_fraction",
    "ceiling_one_core_images_per_s",
    "ceiling_one_core_repetitions",
    "concurrency",
]
SPEEDUP_COLUMNS = CELL + [
    "repetitions",
    "baseline_repetitions",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "efficiency",
    "speedup_total",
    "speedup_total_ci_low",
    "speedup_total_ci_high",
    "efficiency_total",
    "physical_cores",
    "ceiling_fraction",
]


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; NaNs with fewer than two values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    mean = values.mean()
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(mean - half), float(mean + half)


def rate_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a rate's typical value: a Student-t interval of the mean of
    log(rate), back-transformed, exp(m -/+ t * s / sqrt(n)); NaNs with fewer than two values
    or any value that is not a positive number.

    Why this and not the t-interval of the mean, nor a bootstrap of the median: a rate is
    positive and its noise multiplicative (a disturbed repetition is slower by a factor), so
    the interval is built on the log scale, where both bounds come back above zero however
    few or spread the repetitions; it is the interval of the geometric mean, which is the
    median when the rates are log-normal; it is the reciprocal of the same interval for the
    time per image, so a rate and its time tell one story; and it draws no random numbers.
    A percentile bootstrap of the median, with the 3-5 repetitions a run has, only ever
    returns measured values: its '95 %' interval is [min, max], which holds the median only
    75 % of the time with 3 repetitions, and it ignores the small-sample width of t.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2 or not (np.isfinite(values).all() and (values > 0).all()):
        return float("nan"), float("nan")
    logs = np.log(values)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * logs.std(ddof=1) / np.sqrt(n)
    return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))


# /proc/stat and /proc/<pid>/stat count in clock ticks (10 ms per CPU): less than this much
# stolen or used by others is within counting error, however short the trial.
INTERFERENCE_FLOOR_SECONDS = 0.05


def flag_interference(trials: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """trials with an ``interfered`` column: True where the CPU the hypervisor and other
    processes took during the timed region passed ``threshold`` of the machine's capacity
    (and INTERFERENCE_FLOOR_SECONDS, below which it cannot be told from counting error)."""
    df = trials.copy()
    if "interference_fraction" not in df:
        df["interfered"] = False
        return df
    taken = df["steal_seconds"].fillna(0.0) + df["other_cpu_seconds"].fillna(0.0)
    df["interfered"] = (df["interference_fraction"].fillna(0.0) > threshold) & (
        taken > INTERFERENCE_FLOOR_SECONDS
    )
    return df


def summarize(
    trials: pd.DataFrame,
    confidence: float = 0.95,
    device_mb_per_s: float | dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per cell with the statistics of its times (mean and median side by side, the
    coefficient of variation), the trials flagged for interference, and the fraction of the
    ceiling it reaches: the device's read bandwidth for phases that read from it (measured on
    the cell's own dataset's files: ``device_mb_per_s`` by dataset name, or one value for
    all), else one core's median rate of the same work x min(workers, physical cores)."""
    if "interfered" not in trials:
        trials = flag_interference(trials, np.inf)
    medians = trials.groupby(BASELINE_KEYS + ["variant", "workers"])["images_per_s"].agg(
        images_per_s="median", repetitions="size"
    )
    rows = []
    for key, g in trials.groupby(CELL, sort=True):
        cell = dict(zip(CELL, key, strict=True))
        ceiling = cell_ceiling(cell, g, medians, device_mb_per_s)
        rows.append(dict(cell, **_cell_summary(g, confidence), **ceiling))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _cell_summary(g: pd.DataFrame, confidence: float) -> dict:
    """The statistics of one cell's trials (its summary row without keys and ceiling)."""
    s = g["seconds"].to_numpy(dtype=float)
    lo, hi = mean_ci(s, confidence)
    std = float(s.std(ddof=1)) if len(s) > 1 else float("nan")
    return dict(
        repetitions=len(s),
        concurrency=_median(g, "concurrency"),  # requests or images in flight
        mean_seconds=s.mean(),
        median_seconds=float(np.median(s)),
        std_seconds=std,
        min_seconds=s.min(),
        max_seconds=s.max(),
        ci_low_seconds=lo,
        ci_high_seconds=hi,
        mean_startup_seconds=g["startup_seconds"].mean(),
        mean_total_seconds=g["total_seconds"].mean(),
        mean_mb_per_s=g["mb_per_s"].mean(),
        mean_megapixels_per_s=g["megapixels_per_s"].mean(),
        mean_images_per_s=g["images_per_s"].mean(),
        cv=std / s.mean(),
        median_mb_per_s=g["mb_per_s"].median(),
        median_megapixels_per_s=g["megapixels_per_s"].median(),
        median_images_per_s=g["images_per_s"].median(),
        interfered_trials=int(g["interfered"].sum()),
        median_interference_fraction=(
            g["interference_fraction"].median() if "interference_fraction" in g else float("nan")
        ),
        median_peak_memory_bytes=_median(g, "peak_memory_bytes"),
        median_memory_per_worker_bytes=_median(g, "memory_per_worker_bytes"),
        retries=retries_of(g),
    )


def retries_of(g: pd.DataFrame) -> int:
    """The reads a cell's trials retried, all repetitions together (a failing storage server:
    imgread.storage.http); 0 where its records count none."""
    if "retries" not in g:
        return 0
    return int(pd.to_numeric(g["retries"], errors="coerce").fillna(0).sum())


def _median(g: pd.DataFrame, column: str) -> float:
    """The median of a column the older records may lack (NaN then; imgread.instruments.memory)."""
    return float(pd.to_numeric(g[column]).median()) if column in g else float("nan")


def cores_of(g: pd.DataFrame) -> int:
    """Physical cores of the machine the trials ran on (logical where not recorded)."""
    col = "physical_cores" if "physical_cores" in g else "logical_cores"
    return int(g[col].max())


def cell_ceiling(
    cell: dict, g: pd.DataFrame, medians: pd.DataFrame, device_mb_per_s: float | None
) -> dict:
    """The cell's ceiling columns: ``ceiling_kind`` ('device' for phases that read from the
    device, 'cpu' for the rest), ``ceiling_fraction`` (the fraction of it the cell's median
    rate reaches; NaN where the ceiling was not measured) and, for 'cpu', the one-core rate it
    was built from (``ceiling_one_core_images_per_s``, the best median of the phase's
    one-core cells, ``medians``' ``images_per_s``) with that cell's repetitions.

    The one-core rate is itself a median of few repetitions, so a pool can come out above
    100 % of it (a slow first repetition on one core, or more cache on more cores): the
    fraction is kept as measured, not capped, and the answer says why beside it."""
    out = _own_ceiling(cell, g, medians, device_mb_per_s)
    return _with_storage(cell, g, out)


def _with_storage(cell: dict, g: pd.DataFrame, out: dict) -> dict:
    """Where the cell read from a storage profile other than the local files: the storage's
    own ceiling from the trials' probes (imgread.trial.run.storage_ceilings: requests in flight /
    probed latency, and the probed bandwidth), in the phase's rate; the cell's ceiling is the
    lower of it and the CPU ceiling ('storage' where the storage binds). Not for the stream's
    model-bound or latency cells."""
    phase = PHASES[cell["phase"]]
    column = f"ceiling_storage_{phase.rate[0]}"
    local = cell.get("storage", "local") == "local"
    if local or column not in g or out["ceiling_kind"] in ("model", "none"):
        return out
    storage = float(g[column].median())
    if not storage > 0:
        return out
    if out["ceiling_kind"] == "cpu":
        cpu = out["ceiling_one_core_images_per_s"] * usable_cores(cell, g)
        if cpu < storage:  # NaN (no one-core cell) compares False: the storage's then
            return out
    rate = float(g[phase.rate[0]].median())
    return dict(out, ceiling_kind="storage", ceiling_fraction=rate / storage)


def _own_ceiling(
    cell: dict, g: pd.DataFrame, medians: pd.DataFrame, device_mb_per_s: float | None
) -> dict:
    phase = PHASES[cell["phase"]]
    kind = phase.ceiling_kind({p.name: cell[p.name] for p in phase.params})
    out = dict(
        ceiling_kind=kind,
        ceiling_fraction=float("nan"),
        ceiling_one_core_images_per_s=float("nan"),
        ceiling_one_core_repetitions=0,
    )
    if isinstance(device_mb_per_s, dict):
        device_mb_per_s = device_mb_per_s.get(cell.get("dataset"))
    if kind == "model":  # the consumer's own rate bounds it: the fraction reached is the AU
        out["ceiling_fraction"] = float(g["au"].median())
    elif kind == "device" and device_mb_per_s:
        out["ceiling_fraction"] = float(g["mb_per_s"].median()) / device_mb_per_s
    if kind != "cpu":
        return out
    ones = [
        medians.loc[key]
        for variant, workers in phase.one_core
        if (key := (*ceiling_key(cell), variant, workers)) in medians.index
    ]
    if not ones:
        return out
    one = max(ones, key=lambda r: r["images_per_s"])
    usable = usable_cores(cell, g)
    rate = float(one["images_per_s"])
    return dict(
        out,
        ceiling_fraction=float(g["images_per_s"].median()) / (rate * usable),
        ceiling_one_core_images_per_s=rate,
        ceiling_one_core_repetitions=int(one["repetitions"]),
    )


def usable_cores(cell: dict, g: pd.DataFrame) -> int:
    """The cores a cell's workers can use: min(workers, physical cores), at least one."""
    return max(min(cell["workers"], cores_of(g)), 1)


def ceiling_key(cell: dict) -> tuple:
    """BASELINE_KEYS of the sequential cell that sets ``cell``'s CPU ceiling."""
    phase = PHASES[cell["phase"]]
    own = {p.name: cell[p.name] for p in phase.params}
    keys = {**cell, **phase.ceiling_params(own)}
    return tuple(keys[k] for k in BASELINE_KEYS)


def baselines(trials: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """{BASELINE_KEYS values: the baseline cell's trials} (each phase's baseline variant and
    worker count)."""
    is_base = pd.Series(False, index=trials.index)
    for name in trials["phase"].unique():
        variant, workers = PHASES[name].baseline
        is_base |= (
            (trials["phase"] == name)
            & (trials["variant"] == variant)
            & (trials["workers"] == workers)
        )
    return {k: g for k, g in trials[is_base].groupby(BASELINE_KEYS, sort=False)}


def bootstrap_ratio_ci(
    baseline: np.ndarray,
    variant: np.ndarray,
    resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile interval of mean(baseline)/mean(variant), resampling each independently."""
    if len(baseline) < 2 or len(variant) < 2 or resamples < 1:
        return float("nan"), float("nan")
    b = rng.choice(baseline, size=(resamples, len(baseline)), replace=True).mean(axis=1)
    v = rng.choice(variant, size=(resamples, len(variant)), replace=True).mean(axis=1)
    ratios = b / v
    alpha = (1 - confidence) / 2
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))


def speedup(
    trials: pd.DataFrame,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Speedup and efficiency of every cell against its phase's baseline (sequential; for the
    DataLoader, num_workers=1) with the same keys (decoder, output, delivery, ...) and n.

    ``speedup`` uses the timed work (``seconds``); ``speedup_total`` uses ``total_seconds``
    (work + pool start-up), which is what the study timed. ``ceiling_fraction`` is the cell's
    rate over (the phase's ceiling cell's sequential rate x min(workers, physical cores)):
    for decode, the same decoder and output decoding alone (delivery discard), so the cost of
    handing pixels over shows as a lower fraction. Cells without a baseline are left out.
    """
    rows = []
    by_base = baselines(trials)
    for i, (key, g) in enumerate(trials.groupby(CELL, sort=True)):
        cell = dict(zip(CELL, key, strict=True))
        base = by_base.get(tuple(cell[k] for k in BASELINE_KEYS))
        if base is None:
            continue
        workers = cell["workers"]
        cores = cores_of(g)
        row = dict(cell, repetitions=len(g), baseline_repetitions=len(base), physical_cores=cores)
        for col, suffix in (("seconds", ""), ("total_seconds", "_total")):
            b = base[col].to_numpy(dtype=float)
            v = g[col].to_numpy(dtype=float)
            rng = np.random.default_rng([seed, i, len(suffix)])
            s = b.mean() / v.mean()
            lo, hi = bootstrap_ratio_ci(b, v, resamples, confidence, rng)
            row[f"speedup{suffix}"] = s
            row[f"speedup{suffix}_ci_low"] = lo
            row[f"speedup{suffix}_ci_high"] = hi
            row[f"efficiency{suffix}"] = s / max(workers, 1)
        ceiling = by_base.get(ceiling_key(cell))
        row["ceiling_fraction"] = (
            ceiling["seconds"].mean() / g["seconds"].mean() / max(min(workers, cores), 1)
            if ceiling is not None
            else float("nan")
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=SPEEDUP_COLUMNS)
