"""How much of the machine other work took while a trial was timed.

On a shared virtual machine a timed region can lose CPU to the hypervisor (``steal`` in
/proc/stat) and to other processes. A snapshot before and after the region gives both:
steal is read directly; other processes' CPU is the machine's busy time minus this trial's
own (this process and every descendant: pool workers are alive while the clock runs, so
``getrusage(RUSAGE_CHILDREN)``, which counts only reaped children, is not enough alone).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat "cpu" fields, in order (jiffies, all CPUs together)
_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_BUSY = ("user", "nice", "system", "irq", "softirq")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one instant (seconds); ``machine`` is None where /proc/stat is absent."""

    machine: dict[str, float] | None
    own_seconds: float


def _machine_times() -> dict[str, float] | None:
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            first = fh.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1 : 1 + len(_STAT_FIELDS)]]
    values += [0] * (len(_STAT_FIELDS) - len(values))
    return {k: v / CLK_TCK for k, v in zip(_STAT_FIELDS, values, strict=True)}


def _descendants_seconds(root: int) -> float:
    """utime + stime of every live descendant of ``root`` (from /proc/<pid>/stat)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # the process ended while we looked
        # the command name is in parentheses and may contain spaces: split after the last ")"
        rest = stat[stat.rfind(")") + 2 :].split()
        parents[pid] = int(rest[1])
        times[pid] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def snapshot() -> CpuSnapshot:
    """The machine's CPU counters and this trial's own CPU time (self, live and reaped
    descendants), now."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime
    own += _descendants_seconds(os.getpid())
    return CpuSnapshot(machine=_machine_times(), own_seconds=own)


def interference(
    before: CpuSnapshot, after: CpuSnapshot, seconds: float, cpus: int, server: float = 0.0
) -> dict:
    """Record columns: CPU stolen by the hypervisor and used by other processes during the
    timed region, and their share of the machine's CPU capacity over it (wall x cpus).

    ``server``: the CPU seconds a storage server the trial started (imgread.storage) used over
    the region. It is part of what is measured, not interference: it is taken out of both
    ``own_cpu_seconds`` (the server is the trial's child, so counted there) and
    ``other_cpu_seconds``, and the trial records it as ``server_cpu_seconds``.

    ``other_cpu_seconds`` has the resolution of the kernel's clock tick (1/CLK_TCK s per CPU),
    so values of a few hundredths of a second are within counting error.
    """
    own = max(after.own_seconds - before.own_seconds - server, 0.0)
    if before.machine is None or after.machine is None:
        nan = float("nan")
        return dict(
            own_cpu_seconds=own,
            steal_seconds=nan,
            other_cpu_seconds=nan,
            interference_fraction=nan,
        )
    delta = {k: after.machine[k] - before.machine[k] for k in _STAT_FIELDS}
    busy = sum(delta[k] for k in _BUSY)
    other = max(busy - own - server, 0.0)
    capacity = max(seconds, 1e-9) * max(cpus, 1)
    return dict(
        own_cpu_seconds=own,
        steal_seconds=delta["steal"],
        other_cpu_seconds=other,
        interference_fraction=(delta["steal"] + other) / capacity,
    )
