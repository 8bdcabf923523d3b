"""Two studies' trials.csv side by side: the same cells? the same outcomes? and the timings.

``python -m imgread.answer.compare BEFORE.csv AFTER.csv`` answers what a refactor, an upgrade
or a second machine changed. Rows are matched by their cell (phase, variant, n, workers,
repetition, dataset, machine and every grid key); every column that is not a measurement
(images, bytes, pixels, checksums, cache state, versions, settings) must be equal; the
measurements (times, rates, memory, faults, noise, residency) and the identities each run
makes afresh (the dataset id, which hashes the files' mtimes; an emulated server's address)
differ from run to run, so they are not compared: the timings are shown as medians per phase
side by side. It exits 1 when a cell or a
column differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

import pandas as pd

from imgread.phases.registry import PARAM_COLUMNS

CELL_COLUMNS = ("phase", "variant", "n_images", "workers", "repetition", "dataset", "machine")
# What a trial measures: each run gives other values. The rest is the trial's outcome and
# identity, and is expected equal between two runs of the same code on the same data.
MEASURED = re.compile(
    r"(seconds|_s$|_per_s|_at$|_ms$|memory|rss|faults|interference|fraction_before|"
    r"concurrency|^hostname$|^cpu_model$|_cpu|^au$|achieved_fps|deadline_misses|"
    r"deadline_miss_fraction|^probe_|^ceiling_|collate_pool_misses|interfered|^batches_per|"
    r"^extra$)"  # extra: the record's own columns again, measurements among them
)
TIMING_SUMMARY = ("seconds", "startup_seconds", "images_per_s", "peak_memory_bytes")


@dataclass
class Comparison:
    """What two trial tables share and where they differ."""

    only_before: list[tuple] = field(default_factory=list)
    only_after: list[tuple] = field(default_factory=list)
    columns_only_before: list[str] = field(default_factory=list)
    columns_only_after: list[str] = field(default_factory=list)
    differences: dict[str, list[tuple]] = field(default_factory=dict)  # column -> [(cell, b, a)]
    compared: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)
    cells: int = 0

    @property
    def same(self) -> bool:
        return not (
            self.only_before
            or self.only_after
            or self.columns_only_before
            or self.columns_only_after
            or self.differences
        )


# Identity one run makes afresh, equal data or not: the dataset's id hashes its manifest, whose
# mtimes are the files' own; an http profile's address and its qdisc's handle are the kernel's.
RUN_SPECIFIC = ("dataset_id", "storage_address", "storage_qdisc")

# Settings whose names look like measurements: how a thing was measured, what was in effect.
SETTINGS = re.compile(r"(_method$|_effective$|^memory_total_bytes$)")


def is_measured(column: str) -> bool:
    """Whether ``column`` differs run to run (a measurement, or an identity made afresh: see
    RUN_SPECIFIC) rather than being an outcome."""
    if column in RUN_SPECIFIC:
        return True
    return bool(MEASURED.search(column)) and not SETTINGS.search(column)


def _keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in (*CELL_COLUMNS, *PARAM_COLUMNS) if c in frame]


def _norm(value) -> str:
    if pd.isna(value):
        return ""
    text = str(value)
    try:
        return repr(float(text)) if "." in text or "e" in text.lower() else str(int(text))
    except ValueError:
        return text


def compare(before: pd.DataFrame, after: pd.DataFrame) -> Comparison:
    """Match the rows by cell and compare every column that is not a measurement."""
    out = Comparison()
    out.columns_only_before = sorted(set(before) - set(after))
    out.columns_only_after = sorted(set(after) - set(before))
    keys = [k for k in _keys(before) if k in after]
    b = before.astype(object).map(_norm).set_index(keys)
    a = after.astype(object).map(_norm).set_index(keys)
    out.only_before = sorted(set(b.index) - set(a.index))
    out.only_after = sorted(set(a.index) - set(b.index))
    common = sorted(set(b.index) & set(a.index))
    out.cells = len(common)
    shared = [c for c in b.columns if c in a.columns]
    out.measured = [c for c in shared if is_measured(c)]
    out.compared = [c for c in shared if not is_measured(c)]
    b, a = b.loc[common], a.loc[common]
    for col in out.compared:
        diff = b[col] != a[col]
        if diff.any():
            out.differences[col] = [
                (cell, b.at[cell, col], a.at[cell, col]) for cell in b.index[diff.to_numpy()]
            ]
    return out


def timing_medians(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Median of each timing column per phase, before and after, and their ratio."""
    rows = []
    for phase in sorted(set(before["phase"]) | set(after["phase"])):
        for col in TIMING_SUMMARY:
            if col not in before or col not in after:
                continue
            mb = pd.to_numeric(before.loc[before["phase"] == phase, col], errors="coerce")
            ma = pd.to_numeric(after.loc[after["phase"] == phase, col], errors="coerce")
            med_b, med_a = mb.median(), ma.median()
            ratio = med_a / med_b if med_b else float("nan")
            rows.append((phase, col, med_b, med_a, ratio))
    return pd.DataFrame(rows, columns=["phase", "column", "before", "after", "after/before"])


def report(c: Comparison, medians: pd.DataFrame, limit: int = 5) -> str:
    """The comparison as text: cells, columns, differences, then the timing medians."""
    lines = [
        f"{c.cells} cells in both; {len(c.only_before)} only before, "
        f"{len(c.only_after)} only after",
        f"{len(c.compared)} columns compared exactly, {len(c.measured)} measurements "
        f"(not compared): {', '.join(c.measured)}",
    ]
    for what, items in (
        ("cells only before", c.only_before),
        ("cells only after", c.only_after),
        ("columns only before", c.columns_only_before),
        ("columns only after", c.columns_only_after),
    ):
        if items:
            lines.append(f"{what}: {items[:limit]}{' ...' if len(items) > limit else ''}")
    for col, diffs in c.differences.items():
        lines.append(f"column {col!r} differs in {len(diffs)} cells, e.g.:")
        lines += [f"  {cell}: {b!r} -> {a!r}" for cell, b, a in diffs[:limit]]
    lines.append("same cells and outcomes" if c.same else "DIFFERENT")
    lines.append("")
    lines.append(medians.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compare two trials.csv files; exit 1 when a cell or an outcome differs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args(argv)
    before, after = pd.read_csv(args.before), pd.read_csv(args.after)
    c = compare(before, after)
    print(report(c, timing_medians(before, after)))
    return 0 if c.same else 1


if __name__ == "__main__":
    sys.exit(main())
