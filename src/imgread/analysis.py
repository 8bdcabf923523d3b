"""Tables from trial records: tidy trials, per-cell summaries, speedup with bootstrap CIs.

All statistics are explicit: n, mean, median, std (ddof=1), min, max and a Student-t 95 %
confidence interval of the mean time; speedup = mean sequential time / mean variant time at
the same phase and n, with a percentile bootstrap interval over repetitions.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from imgread.keys import BASELINE_KEYS, CELL, CURVE, NO_PARAM
from imgread.phases.registry import PARAM_COLUMNS, PHASES
from imgread.scaling import scaling_table
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
    "ceiling_kind",
    "ceiling_fraction",
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


FRAME_COLUMNS = ["frame", "arrival_s", "start_s", "ready_s", "done_s", "latency_ms"]


def load_records(paths: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read trial JSON records: one tidy row per trial, sorted by cell, and the per-frame
    timestamps of stream trials (one row per frame, with the trial's keys)."""
    rows, frames = [], []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            record = json.load(fh)
        times = record.pop("frames", None)
        rows.append(record)
        if times:
            keys = {k: record.get(k, NO_PARAM) for k in [*CELL, "repetition"]}
            for i, (arrival, start, ready, done) in enumerate(times):
                frames.append(
                    dict(
                        keys,
                        frame=i,
                        arrival_s=arrival,
                        start_s=start,
                        ready_s=ready,
                        done_s=done,
                        latency_ms=(done - arrival) * 1e3,
                    )
                )
    if not rows:
        raise ValueError("no trial records to aggregate")
    df = with_all_keys(pd.DataFrame(rows))
    df = df.sort_values(CELL + ["repetition"], kind="stable").reset_index(drop=True)
    return df, pd.DataFrame(frames, columns=[*CELL, "repetition", *FRAME_COLUMNS])


def with_all_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Every phase's grid-key column, '-' where a row's phase has no such key."""
    df = df.copy()
    for col in PARAM_COLUMNS:
        df[col] = df[col].fillna(NO_PARAM) if col in df else NO_PARAM
    df["machine"] = df["machine"].fillna("local") if "machine" in df else "local"
    return df


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; NaNs with fewer than two values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    mean = values.mean()
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(mean - half), float(mean + half)


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
    trials: pd.DataFrame, confidence: float = 0.95, device_mb_per_s: float | None = None
) -> pd.DataFrame:
    """One row per cell with the statistics of its times (mean and median side by side, the
    coefficient of variation), the trials flagged for interference, and the fraction of the
    ceiling it reaches: the device's read bandwidth for phases that read from it, else one
    core's median rate of the same work x min(workers, physical cores)."""
    if "interfered" not in trials:
        trials = flag_interference(trials, np.inf)
    medians = trials.groupby(BASELINE_KEYS + ["variant", "workers"])[
        ["images_per_s", "mb_per_s"]
    ].median()
    rows = []
    for key, g in trials.groupby(CELL, sort=True):
        s = g["seconds"].to_numpy(dtype=float)
        lo, hi = mean_ci(s, confidence)
        cell = dict(zip(CELL, key, strict=True))
        std = float(s.std(ddof=1)) if len(s) > 1 else float("nan")
        kind, fraction = cell_ceiling(cell, g, medians, device_mb_per_s)
        rows.append(
            dict(
                cell,
                repetitions=len(s),
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
                    g["interference_fraction"].median()
                    if "interference_fraction" in g
                    else float("nan")
                ),
                ceiling_kind=kind,
                ceiling_fraction=fraction,
            )
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def cores_of(g: pd.DataFrame) -> int:
    """Physical cores of the machine the trials ran on (logical where not recorded)."""
    col = "physical_cores" if "physical_cores" in g else "logical_cores"
    return int(g[col].max())


def cell_ceiling(
    cell: dict, g: pd.DataFrame, medians: pd.DataFrame, device_mb_per_s: float | None
) -> tuple[str, float]:
    """(kind, fraction of it the cell's median rate reaches): 'device' for phases that read
    from the device, 'cpu' for the rest; NaN where the ceiling was not measured."""
    phase = PHASES[cell["phase"]]
    kind = phase.ceiling_kind({p.name: cell[p.name] for p in phase.params})
    if kind == "none":
        return kind, float("nan")
    if kind == "model":  # the consumer's own rate bounds it: the fraction reached is the AU
        return kind, float(g["au"].median())
    if kind == "device":
        if not device_mb_per_s:
            return "device", float("nan")
        return "device", float(g["mb_per_s"].median()) / device_mb_per_s
    ones = [
        float(medians.loc[key, "images_per_s"])
        for variant, workers in phase.one_core
        if (key := (*ceiling_key(cell), variant, workers)) in medians.index
    ]
    if not ones:
        return "cpu", float("nan")
    one = max(ones)
    usable = max(min(cell["workers"], cores_of(g)), 1)
    return "cpu", float(g["images_per_s"].median()) / (one * usable)


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


def scaling(trials: pd.DataFrame) -> pd.DataFrame:
    """The USL fit of every speedup-vs-workers curve (imgread.scaling)."""
    base = {k: g["seconds"].mean() for k, g in baselines(trials).items()}
    parallel = trials[
        [
            PHASES[p].variants[v].parallel
            for p, v in zip(trials["phase"], trials["variant"], strict=True)
        ]
    ]
    return scaling_table(parallel, CURVE, base)


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


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """Render a frame as a GitHub Markdown table (numbers right-aligned)."""

    def cell(v):
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    align = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns)
        + "|"
    )
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def by_machine(table: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """Make a per-study table one per machine: the frames are split by their machine column,
    and where there are several, the results are stacked with a machine column first."""

    @functools.wraps(table)
    def wrapper(*frames: pd.DataFrame) -> pd.DataFrame:
        machines = sorted(set().union(*(set(f["machine"]) for f in frames if "machine" in f)))
        if len(machines) <= 1:
            return table(*frames)
        parts = []
        for m in machines:
            part = table(*(f[f["machine"] == m] if "machine" in f else f for f in frames))
            parts.append(part.assign(machine=m)[["machine", *part.columns]])
        return pd.concat(parts, ignore_index=True)

    return wrapper


@by_machine
def load_table(summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 1: sequential vs asyncio load time per n, with speedup."""
    s = summary[summary["phase"] == "load"]
    seq = s[s["variant"] == "sequential"].set_index("n_images")["mean_seconds"]
    aio = s[s["variant"] == "asyncio"].set_index("n_images")["mean_seconds"]
    sp = speed[(speed["phase"] == "load") & (speed["variant"] == "asyncio")]
    sp = sp.set_index("n_images")["speedup"]
    out = pd.DataFrame({"sequential (s)": seq, "asyncio (s)": aio, "speedup": sp}).dropna(how="all")
    out.index.name = "images"
    return out.reset_index()


@by_machine
def decode_table(summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 2: sequential vs processes decode per n and workers.

    Times and speedup include the pool start-up (total_seconds), as the study timed them;
    the columns without start-up are beside them.
    """
    s = study_cells(summary)
    seq = s[s["variant"] == "sequential"].set_index("n_images")["mean_seconds"]
    proc = s[s["variant"] == "processes"]
    sp = study_cells(speed)
    sp = sp[sp["variant"] == "processes"]
    merged = proc.merge(sp, on=CELL)
    out = pd.DataFrame(
        {
            "images": merged["n_images"],
            "processes": merged["workers"],
            "sequential (s)": merged["n_images"].map(seq),
            "parallel (s)": merged["mean_total_seconds"],
            "speedup": merged["speedup_total"],
            "efficiency": merged["efficiency_total"],
            "parallel, no start-up (s)": merged["mean_seconds"],
            "speedup, no start-up": merged["speedup"],
        }
    )
    return out.sort_values(["images", "processes"]).reset_index(drop=True)


def ceiling_key(cell: dict) -> tuple:
    """BASELINE_KEYS of the sequential cell that sets ``cell``'s CPU ceiling."""
    phase = PHASES[cell["phase"]]
    own = {p.name: cell[p.name] for p in phase.params}
    keys = {**cell, **phase.ceiling_params(own)}
    return tuple(keys[k] for k in BASELINE_KEYS)


STUDY_DECODE = {"decoder": "pillow", "output": "full", "delivery": "discard"}


def study_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Decode rows measured the study's way (Pillow, full size, pixels discarded)."""
    mask = df["phase"] == "decode"
    for k, v in STUDY_DECODE.items():
        mask &= df[k] == v
    return df[mask]


def pipeline_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Decode rows at every n where more than the study's way was measured."""
    d = df[df["phase"] == "decode"]
    other = d[~d.index.isin(study_cells(d).index)]
    return d[d["n_images"].isin(set(other["n_images"]))]


@by_machine
def pipeline_table(trials: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """Per decoder, output, delivery, variant and workers: median images/s and megapixels/s,
    speedup over the same decoder's sequential decode, and the fraction of the core ceiling."""
    d = pipeline_cells(trials)
    keys = ["n_images", "decoder", "output", "delivery", "variant", "workers"]
    rates = (
        d.groupby(keys)
        .agg(
            repetitions=("seconds", "size"),
            median_images_per_s=("images_per_s", "median"),
            median_megapixels_per_s=("megapixels_per_s", "median"),
            median_startup_seconds=("startup_seconds", "median"),
        )
        .reset_index()
    )
    sp = speed[keys + ["speedup", "ceiling_fraction"]]
    out = rates.merge(sp, on=keys, how="left")
    return out.sort_values(keys).reset_index(drop=True)


LOADER_LINE = ["decoder", "source", "batch_size", "page_cache", "pin_memory", "n_images"]
HURT_MARGIN = 0.05  # a worker count "hurts" when its median rate is this much below the best


@by_machine
def dataloader_workers(trials: pd.DataFrame) -> pd.DataFrame:
    """Per DataLoader line (decoder, source, ...): the num_workers=1 rate, the best num_workers
    and its rate, the best over the goal (num_workers=1 rate x physical cores), and the first
    num_workers above the best whose median rate is more than 5 % below it (where more workers
    start to hurt)."""
    d = trials[trials["phase"] == "dataloader"]
    columns = [
        *LOADER_LINE,
        "images_per_s_w1",
        "best_workers",
        "best_images_per_s",
        "physical_cores",
        "best_over_cores_x_w1",
        "hurts_from_workers",
    ]
    rows = []
    for key, g in d.groupby(LOADER_LINE, sort=True):
        med = g.groupby("workers")["images_per_s"].median().sort_index()
        cores = int(g["physical_cores"].max())
        best_w = int(med.idxmax())
        worse = [w for w in med.index if w > best_w and med[w] < (1 - HURT_MARGIN) * med[best_w]]
        w1 = float(med.get(1, float("nan")))
        rows.append(
            dict(
                zip(LOADER_LINE, key, strict=True),
                images_per_s_w1=w1,
                best_workers=best_w,
                best_images_per_s=float(med[best_w]),
                physical_cores=cores,
                best_over_cores_x_w1=float(med[best_w]) / (w1 * cores),
                hurts_from_workers=int(worse[0]) if worse else -1,
            )
        )
    return pd.DataFrame(rows, columns=columns)


STREAM_LOAD = [
    "decoder",
    "fps",
    "compute_ms",
    "compute",
    "prefetch",
    "page_cache",
    "deadline_ms",
    "n_images",
]
AU_GOAL = 0.90
LATENCY_GOAL = 1.5  # p99 within this many times one frame's read + decode + compute


@by_machine
def stream_producers(trials: pd.DataFrame) -> pd.DataFrame:
    """Per offered load (fps, compute, ...): the producer and worker count to use, with its
    median AU, p99 latency, achieved fps and deadline misses.

    All at once (fps 0) the best keeps the consumer busiest (highest AU); at a rate, the best
    has the lowest p99 latency. ``single_frame_ms`` is one frame's read + decode + compute,
    measured by the sequential producer with all frames at once (its median per-frame service
    time); ``p99_over_single_frame`` compares the best producer's p99 with it.
    """
    d = trials[trials["phase"] == "stream"]
    columns = [
        *STREAM_LOAD,
        "best_variant",
        "best_workers",
        "au",
        "latency_p99_ms",
        "achieved_fps",
        "deadline_miss_fraction",
        "single_frame_ms",
        "p99_over_single_frame",
        "sequential_au",
        "sequential_latency_p99_ms",
    ]
    if d.empty:
        return pd.DataFrame(columns=columns)
    cells = (
        d.groupby([*STREAM_LOAD, "variant", "workers"])
        .agg(
            au=("au", "median"),
            latency_p99_ms=("latency_p99_ms", "median"),
            achieved_fps=("achieved_fps", "median"),
            deadline_miss_fraction=("deadline_miss_fraction", "median"),
            service_ms=("service_ms", "median"),
        )
        .reset_index()
    )
    rows = []
    for key, g in cells.groupby(STREAM_LOAD, sort=True):
        load = dict(zip(STREAM_LOAD, key, strict=True))
        at_once = str(load["fps"]) == "0"
        best = g.sort_values(
            ["au", "latency_p99_ms"] if at_once else ["latency_p99_ms"],
            ascending=[False, True] if at_once else [True],
        ).iloc[0]
        base = cells[
            (cells["variant"] == "sequential")
            & (cells["fps"].astype(str) == "0")
            & (cells["decoder"] == load["decoder"])
            & (cells["compute_ms"].astype(str) == str(load["compute_ms"]))
            & (cells["compute"] == load["compute"])
            & (cells["page_cache"] == load["page_cache"])
        ]
        single = float(base["service_ms"].median()) if not base.empty else float("nan")
        seq = g[g["variant"] == "sequential"]
        rows.append(
            dict(
                load,
                best_variant=best["variant"],
                best_workers=int(best["workers"]),
                au=best["au"],
                latency_p99_ms=best["latency_p99_ms"],
                achieved_fps=best["achieved_fps"],
                deadline_miss_fraction=best["deadline_miss_fraction"],
                single_frame_ms=single,
                p99_over_single_frame=best["latency_p99_ms"] / single,
                sequential_au=float(seq["au"].iloc[0]) if not seq.empty else float("nan"),
                sequential_latency_p99_ms=(
                    float(seq["latency_p99_ms"].iloc[0]) if not seq.empty else float("nan")
                ),
            )
        )
    return pd.DataFrame(rows, columns=columns)


CEILING_COLUMNS = [
    "kind",
    "phase",
    *PARAM_COLUMNS,
    "n_images",
    "readers",
    "mb_per_s",
    "images_per_s",
    "megapixels_per_s",
    "method",
]


def ceilings_table(summary: pd.DataFrame, device: dict | None) -> pd.DataFrame:
    """What the hardware allows: the device's cold read bandwidth at each number of readers
    (kind 'device'), and each one-core cell's median rate (kind 'cpu'; the phase's fastest
    one-core cell x min(workers, physical cores) is a pool's ceiling)."""
    rows = []
    if device:
        for readers, mbps in device["median_mb_per_s_by_jobs"].items():
            rows.append(
                dict(
                    kind="device",
                    readers=int(readers),
                    mb_per_s=mbps,
                    method=device["method"] if device["method"] != "fio" else device["fio_version"],
                )
            )
    for name, variant, workers in ((n, *cell) for n, p in PHASES.items() for cell in p.one_core):
        base = summary[
            (summary["phase"] == name)
            & (summary["variant"] == variant)
            & (summary["workers"] == workers)
            & (summary["ceiling_kind"] == "cpu")
        ]
        for r in base.itertuples(index=False):
            rows.append(
                dict(
                    kind="cpu",
                    phase=name,
                    **{c: getattr(r, c) for c in PARAM_COLUMNS},
                    n_images=r.n_images,
                    readers=1,
                    mb_per_s=r.median_mb_per_s,
                    images_per_s=r.median_images_per_s,
                    megapixels_per_s=r.median_megapixels_per_s,
                    method=f"{variant} x{workers}",
                )
            )
    return pd.DataFrame(rows, columns=CEILING_COLUMNS)
