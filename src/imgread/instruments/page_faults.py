"""Minor page faults of a trial's process tree, counted over the timed region only.

A minor fault is the kernel mapping a page on first touch (a freshly allocated buffer,
zeroed): decoding into a new 9 MB array each image costs about 2,300 of them, and their cost
is part of the decode time a trial measures. The count is taken right before the clock starts
and right after it stops (:func:`snapshot`), over the trial's process and every live
descendant (pool workers, DataLoader workers: ``minflt`` of /proc/<pid>/stat, read while they
are alive), each with ``cminflt``, the faults of the children it has reaped (what
``getrusage(RUSAGE_CHILDREN)`` reports for the trial's own process). A worker started and
reaped inside the timed region is counted whole; one that existed before and is reaped
inside it moves from its own counter to its parent's ``cminflt``, so nothing is counted twice.

Without /proc (macOS), ``getrusage`` of the process and its reaped children is all there is:
live workers' faults are missing there, and ``minor_faults_method`` says so.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True)
class FaultSnapshot:
    """The tree's minor faults at one instant and how they were counted."""

    count: int
    method: str  # "proc-tree" or "getrusage"


def _stat(pid: int | str) -> tuple[int, int, int] | None:
    """(ppid, minflt, cminflt) of a process from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ")"
    rest = text[text.rfind(")") + 2 :].split()
    # fields 4 (ppid), 10 (minflt), 11 (cminflt) of proc(5); rest[0] is field 3 (state)
    return int(rest[1]), int(rest[7]), int(rest[8])


def tree_faults(root: int) -> int | None:
    """minflt + cminflt of ``root`` and every live descendant; None without /proc."""
    own = _stat(root)
    if own is None:
        return None
    try:
        pids = [p for p in os.listdir(PROC) if p.isdigit()]
    except OSError:
        return None
    table = {}
    for pid in pids:
        row = _stat(pid)
        if row is not None:
            table[int(pid)] = row
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total = own[1] + own[2]
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        total += table[pid][1] + table[pid][2]
        stack.extend(children.get(pid, []))
    return total


def snapshot() -> FaultSnapshot:
    """The minor faults of this process and its descendants, now."""
    count = tree_faults(os.getpid())
    if count is not None:
        return FaultSnapshot(count, "proc-tree")
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return FaultSnapshot(me.ru_minflt + reaped.ru_minflt, "getrusage")


def columns(before: FaultSnapshot | None, after: FaultSnapshot | None, images: int) -> dict:
    """Record columns: the timed region's minor faults, in all and per image."""
    if before is None or after is None:
        return {"minor_faults": None, "minor_faults_per_image": None, "minor_faults_method": ""}
    faults = max(after.count - before.count, 0)
    return {
        "minor_faults": faults,
        "minor_faults_per_image": faults / images if images else None,
        "minor_faults_method": after.method,
    }
