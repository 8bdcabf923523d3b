"""The stream phase's table: the producer and worker count to use per offered load."""

from __future__ import annotations

import pandas as pd

from imgread.answer.tables import by_machine

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
COLUMNS = [
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


@by_machine
def stream_producers(
    trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame
) -> pd.DataFrame:
    """Per offered load (fps, compute, ...): the producer and worker count to use, with its
    median AU, p99 latency, achieved fps and deadline misses.

    All at once (fps 0) the best keeps the consumer busiest (highest AU); at a rate, the best
    has the lowest p99 latency. ``single_frame_ms`` is one frame's read + decode + compute,
    measured by the sequential producer with all frames at once (its median per-frame service
    time); ``p99_over_single_frame`` compares the best producer's p99 with it.
    """
    if trials.empty:
        return pd.DataFrame(columns=COLUMNS)
    load_keys, columns = _load_keys(trials)
    cells = (
        trials.groupby([*load_keys, "variant", "workers"])
        .agg(
            au=("au", "median"),
            latency_p99_ms=("latency_p99_ms", "median"),
            achieved_fps=("achieved_fps", "median"),
            deadline_miss_fraction=("deadline_miss_fraction", "median"),
            service_ms=("service_ms", "median"),
        )
        .reset_index()
    )
    rows = [
        _producer_row(dict(zip(load_keys, key, strict=True)), g, cells)
        for key, g in cells.groupby(load_keys, sort=True)
    ]
    return pd.DataFrame(rows, columns=columns)


def _load_keys(trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The offered load's keys and the table's columns: ``streams`` beside ``fps`` only where
    a trial ran more than one stream (so a study of one stream a cell keeps its table)."""
    streams = trials["streams"].astype(str) if "streams" in trials else pd.Series(dtype=str)
    if not streams.isin(["1", "-", "nan"]).all():
        at = STREAM_LOAD.index("fps") + 1
        keys = [*STREAM_LOAD[:at], "streams", *STREAM_LOAD[at:]]
        return keys, [*keys, *COLUMNS[len(STREAM_LOAD) :]]
    return STREAM_LOAD, COLUMNS


def _producer_row(load: dict, g: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """The row of one offered load: its best cell of ``g`` (the load's cells), beside one
    frame's time and the sequential producer's."""
    at_once = str(load["fps"]) == "0"
    best = g.sort_values(
        ["au", "latency_p99_ms"] if at_once else ["latency_p99_ms"],
        ascending=[False, True] if at_once else [True],
    ).iloc[0]
    single = _single_frame_ms(load, cells)
    seq = g[g["variant"] == "sequential"]
    return dict(
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


def _single_frame_ms(load: dict, cells: pd.DataFrame) -> float:
    """One frame's read + decode + compute for ``load``: the sequential producer's median
    service time with all frames at once, the same decoder, compute and cache."""
    base = cells[
        (cells["variant"] == "sequential")
        & (cells["fps"].astype(str) == "0")
        & (cells["decoder"] == load["decoder"])
        & (cells["compute_ms"].astype(str) == str(load["compute_ms"]))
        & (cells["compute"] == load["compute"])
        & (cells["page_cache"] == load["page_cache"])
    ]
    return float(base["service_ms"].median()) if not base.empty else float("nan")
