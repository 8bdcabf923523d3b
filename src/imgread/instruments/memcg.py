"""The memory cgroup a trial runs in, where the machine allows one (imgread.instruments.memory).

``imgread-trial-<pid>`` is made under the memory cgroup the trial process is in (so a job's own
limits, SLURM's, still apply), in cgroup v1's memory hierarchy or in v2's unified one, and the
process moves into it before it starts any worker: every worker inherits it. Right before the
clock its peak is reset (v1: 0 written to ``memory.max_usage_in_bytes``; v2: ``memory.peak``
written, Linux 6.12+, else the peak since the cgroup was made is kept and the method says
``cgroup-v2-since-start``), and right after it the peak is read: no sampling at all. Leaving,
the process moves back and the cgroup is removed, whatever ended the trial; one left by a
killed trial (its pid no longer alive) is removed when the next trial starts, any of the dead
trial's workers still in it moved out first.

What the peak counts. A cgroup is charged for the pages its processes bring in: anonymous
memory, shared memory (``/dev/shm``, mapped or not), the kernel memory they use (page tables,
pipe buffers) and file pages, the page cache of the files they read or map: the dataset's, a
decoded cache, a library's code. imgread.instruments.memory counts no file pages (its docstring says
why), so the cgroup's file pages (its active + inactive file pages, ``memory.stat``) are
taken off the peak, the larger of their amounts at the reset and at the read: exact where they
do not change during the clock (the warm phases), else (files read from a cold cache) low by at
most the file pages read after the peak. Shared memory is not among them (it is on the
anonymous lists) and stays counted. Pages the trial process had before it moved stay charged
where they were: the cgroup holds what the trial added.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PREFIX = "imgread-trial-"
PROC = Path("/proc")


def alive(pid: int) -> bool:
    """True while ``pid`` names a process that has not ended: one that exists and is not a
    zombie (it ended; only its parent's wait is missing). The one liveness check of the
    package: a trial's cgroup, a storage session's namespace or folder is a dead trial's
    leftover once this says False of its creator."""
    if pid <= 0:
        return False
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except PermissionError:  # /proc mounted hidepid: it exists, its state is not ours to see
        return True
    return state != "Z"


def mountinfo() -> list[tuple[list[str], list[str]]]:
    """Each line of /proc/self/mountinfo as (the fields before ' - ', the fields after)."""
    try:
        lines = (PROC / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        out.append((left.split(), right.split()))
    return out


def mounts() -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of every cgroup mount."""
    out = []
    for fields, tail in mountinfo():
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((fields[3], fields[4], tail[0], tail[2]))
    return out


def cgroup_paths(pid: int | str = "self") -> dict[str, str]:
    """{controller: cgroup path} of a process from /proc/<pid>/cgroup ('' for v2's unified
    hierarchy); OSError where it cannot be read."""
    paths = {}
    for line in (PROC / str(pid) / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def inside(point: str, root: str, path: str) -> Path | None:
    """The folder of cgroup ``path`` under a hierarchy mounted at ``point`` showing ``root``;
    None where the mount does not show it."""
    rel = os.path.relpath(path, root)
    if rel.startswith(".."):
        return None  # the process's cgroup is outside what this mount shows
    return Path(point) / ("" if rel == "." else rel)


def current_cgroup() -> tuple[str, Path] | None:
    """(version, folder) of the memory cgroup this process is in: in v1's memory hierarchy,
    else in v2's unified one where memory is among its controllers; None where neither is."""
    try:
        paths = cgroup_paths()
    except OSError:
        return None
    found = {}
    for root, point, fstype, options in mounts():
        if fstype == "cgroup" and "memory" in options.split(",") and "memory" in paths:
            found.setdefault("v1", (root, point, paths["memory"]))
        elif fstype == "cgroup2" and "" in paths and _has_memory(Path(point)):
            found.setdefault("v2", (root, point, paths[""]))
    for version in ("v1", "v2"):
        if version in found:
            root, point, path = found[version]
            folder = inside(point, root, path)
            if folder is not None:
                return version, folder
    return None


def words(path: Path) -> list[str]:
    """The words of a cgroup file (cgroup.controllers, cgroup.subtree_control); [] where it
    cannot be read."""
    try:
        return path.read_text().split()
    except OSError:
        return []


def _has_memory(point: Path) -> bool:
    return "memory" in words(point / "cgroup.controllers")


def move(pid: int, to: Path) -> None:
    """Move process ``pid`` (all its threads) into the cgroup folder ``to``."""
    (to / "cgroup.procs").write_text(f"{pid}\n")


def procs(folder: Path) -> list[int]:
    """The pids in a cgroup folder; [] where it cannot be read."""
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove_cgroup(folder: Path, parent: Path, wait_s: float = 0.2) -> bool:
    """Remove a trial's cgroup: wait up to ``wait_s`` for its processes to end (the pools were
    shut down and joined, so workers are gone in milliseconds), then move any still there to
    ``parent`` (multiprocessing's resource tracker lives as long as the trial); True if it is
    gone."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            folder.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
    for pid in procs(folder):
        try:
            move(pid, parent)
        except OSError:
            pass  # it ended meanwhile
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def remove_stale(parent: Path) -> list[Path]:
    """Remove the trial cgroups under ``parent`` whose trial process is no longer alive (a
    killed trial's); what a dead trial's workers still there are moved to ``parent``."""
    removed = []
    for folder in parent.glob(f"{PREFIX}*"):
        pid = folder.name.removeprefix(PREFIX)
        if pid.isdigit() and not alive(int(pid)) and remove_cgroup(folder, parent, 0.0):
            removed.append(folder)
    return removed


def _stat(folder: Path) -> dict[str, int]:
    out = {}
    for line in (folder / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def file_pages(version: str, folder: Path) -> int:
    """The file pages (page cache, mapped or not) charged to the cgroup."""
    s = _stat(folder)
    if version == "v1":
        return s["total_active_file"] + s["total_inactive_file"]
    return s["active_file"] + s["inactive_file"]


class TrialCgroup:
    """The memory cgroup a trial process is moved into (see the module docstring)."""

    def __init__(self, version: str, parent: Path, pid: int) -> None:
        self.version, self.parent, self.pid = version, parent, pid
        self.folder = parent / f"{PREFIX}{pid}"
        self.method = f"cgroup-{version}"
        self.peak_file = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
        self._peak_fd: int | None = None
        self._files_start = 0

    @classmethod
    def enter(cls, pid: int) -> TrialCgroup | None:
        """Make the cgroup (after removing stale ones) and move ``pid`` into it; None where
        the machine does not allow it."""
        where = current_cgroup()
        if where is None:
            return None
        try:
            remove_stale(where[1])
            cg = cls(*where, pid)
            cg.folder.mkdir(exist_ok=True)
        except OSError:
            return None
        try:
            if not (cg.folder / cg.peak_file).exists():
                raise OSError(f"no memory controller in {cg.folder}")
            move(pid, cg.folder)
        except BaseException as exc:
            remove_cgroup(cg.folder, cg.parent, 0.0)
            if isinstance(exc, OSError):
                return None
            raise
        return cg

    def reset(self) -> None:
        """Reset the peak to the usage now (v2 before 6.12: keep the peak since start)."""
        if self.version == "v1":
            (self.folder / self.peak_file).write_text("0\n")
        else:
            try:
                self._peak_fd = os.open(self.folder / self.peak_file, os.O_RDWR)
                os.write(self._peak_fd, b"reset\n")
            except OSError:
                self._close_fd()
                self.method = "cgroup-v2-since-start"
        self._files_start = file_pages(self.version, self.folder)

    def peak_added(self) -> int:
        """The cgroup's peak since :meth:`reset`, less its file pages."""
        if self._peak_fd is not None:  # v2's reset holds for the file descriptor that did it
            os.lseek(self._peak_fd, 0, os.SEEK_SET)
            peak = int(os.read(self._peak_fd, 64).split()[0])
        else:
            peak = int((self.folder / self.peak_file).read_text().split()[0])
        files = max(self._files_start, file_pages(self.version, self.folder))
        return max(0, peak - files)

    def _close_fd(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None

    def leave(self) -> None:
        """Move the process back where it was and remove the cgroup (where that fails, the
        next trial removes it: this pid will be gone)."""
        self._close_fd()
        try:
            move(self.pid, self.parent)
        except OSError as exc:
            print(f"warning: could not leave {self.folder}: {exc}", file=sys.stderr)
            return
        if not remove_cgroup(self.folder, self.parent):
            print(f"warning: could not remove {self.folder}", file=sys.stderr)
