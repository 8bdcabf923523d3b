"""Tables from trial records: tidy trials, per-cell summaries, speedup with bootstrap CIs
(imgread.answer.stats), the scaling fits, the ceilings, and the tables each phase adds.

All statistics are explicit: n, mean, median, std (ddof=1), min, max and a Student-t 95 %
confidence interval of the mean time; speedup = mean sequential time / mean variant time at
the same phase and n, with a percentile bootstrap interval over repetitions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import pandas as pd

from imgread.answer.keys import CELL, CURVE, NO_PARAM
from imgread.answer.scaling import scaling_table
from imgread.answer.stats import (
    SPEEDUP_COLUMNS,
    SUMMARY_COLUMNS,
    baselines,
    flag_interference,
    mean_ci,
    speedup,
    summarize,
)
from imgread.answer.tables import per_machine
from imgread.answer.text import markdown_table
from imgread.phases.base import Table
from imgread.phases.registry import PARAM_COLUMNS, PHASES, load_object

# The statistics live in imgread.answer.stats; the workflow and the tests import them from here too.
__all__ = [
    "CEILING_COLUMNS",
    "FRAME_COLUMNS",
    "SPEEDUP_COLUMNS",
    "SUMMARY_COLUMNS",
    "ceilings_table",
    "flag_interference",
    "load_records",
    "markdown_table",
    "mean_ci",
    "phase_tables",
    "render_table",
    "scaling",
    "speedup",
    "summarize",
    "with_all_keys",
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
        if "placement" not in record and "storage" in record:
            # Made before storage profiles: its `storage` said where the files were read on a
            # cluster (now `placement`); it read the local files (the profile `local`).
            record["placement"] = record.pop("storage")
        if "dataset" not in record:
            # Made before datasets were a list: its dataset is the folder it is stored under
            # (results/trials/<dataset>/...).
            record["dataset"] = _dataset_of_path(p)
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


def _dataset_of_path(path) -> str:
    parts = os.path.normpath(str(path)).split(os.sep)
    if "trials" in parts[:-1]:
        return parts[len(parts) - 1 - parts[::-1].index("trials") + 1]
    return NO_PARAM


def with_all_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Every phase's grid-key column, '-' where a row's phase has no such key. A record made
    before its phase had a key (no value) keeps its meaning: it was measured at the default."""
    df = df.copy()
    for col in PARAM_COLUMNS:
        if col not in df:
            df[col] = pd.Series(float("nan"), index=df.index, dtype=object)
        for name, phase in PHASES.items():
            default = next((p.default for p in phase.params if p.name == col), None)
            if default is not None:
                df.loc[(df["phase"] == name) & df[col].isna(), col] = default
        df[col] = df[col].fillna(NO_PARAM)
    df["machine"] = df["machine"].fillna("local") if "machine" in df else "local"
    df["dataset"] = df["dataset"].fillna(NO_PARAM) if "dataset" in df else NO_PARAM
    return df


def scaling(trials: pd.DataFrame) -> pd.DataFrame:
    """The USL fit of every speedup-vs-workers curve (imgread.answer.scaling)."""
    base = {k: g["seconds"].mean() for k, g in baselines(trials).items()}
    parallel = trials[
        [
            PHASES[p].variants[v].parallel
            for p, v in zip(trials["phase"], trials["variant"], strict=True)
        ]
    ]
    return scaling_table(parallel, CURVE, base)


def phase_tables(
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    speed: pd.DataFrame,
    study_dataset: str | None = None,
) -> list[tuple[Table, pd.DataFrame]]:
    """Every phase's tables, in registry order: each Table with the frame its ``build``
    makes from the phase's rows of (trials, summary, speed) (empty where it has none). In a
    study of several machines each is built per machine and stacked with a machine column,
    also where this phase ran on fewer of them (or none), as in the study's other tables."""
    machines = set(trials["machine"])
    out = []
    for name, phase in PHASES.items():
        own = [f[f["phase"] == name] for f in (trials, summary, speed)]
        every_dataset = own
        if study_dataset is not None:  # the study's dataset, unless a table compares them
            own = [f[f["dataset"] == study_dataset] if "dataset" in f else f for f in own]
        # A phase's tables are the study's comparison, on the files where they are, unless a
        # table compares the storage profiles (Table.every_storage).
        local = own
        if phase.reads_storage:
            local = [f[f["storage"] == "local"] if "storage" in f else f for f in own]
        for table in phase.tables:
            rows = own if table.every_storage else local
            if table.every_dataset:
                rows = every_dataset
            out.append((table, per_machine(load_object(table.build), rows, machines)))
    return out


def render_table(table: Table, df: pd.DataFrame) -> str:
    """A phase table's file text: CSV, or for .md a Markdown table under its title and note."""
    if not table.file.endswith(".md"):
        return df.to_csv(index=False)
    note = f"{table.note}\n\n" if table.note else ""
    return f"# {table.title}\n\n{note}{markdown_table(df)}"


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
