"""The tables the phases add to results/tables/ (each phase's ``tables``: a ``Table`` whose
``build`` is "imgread.answer.tables.<phase>:<function>"). Every build function takes (trials,
summary, speedup) already cut to its phase's rows; :func:`by_machine` makes it one per machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import pandas as pd


def by_machine(table: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
    """Make a per-study table one per machine: the frames are split by their machine column,
    and where there are several, the results are stacked with a machine column first."""

    @functools.wraps(table)
    def wrapper(*frames: pd.DataFrame) -> pd.DataFrame:
        machines = set().union(*(set(f["machine"]) for f in frames if "machine" in f))
        return per_machine(table, frames, machines)

    return wrapper


def per_machine(
    table: Callable[..., pd.DataFrame], frames: Sequence[pd.DataFrame], machines: Iterable[str]
) -> pd.DataFrame:
    """``table(*frames)`` for one machine; for several, ``table`` of each machine's rows,
    stacked with a machine column first (a machine without rows adds none)."""
    machines = sorted(machines)
    if len(machines) <= 1:
        return table(*frames)
    parts = []
    for m in machines:
        part = table(*(f[f["machine"] == m] if "machine" in f else f for f in frames))
        parts.append(part.assign(machine=m)[["machine", *part.columns]])
    return pd.concat(parts, ignore_index=True)
