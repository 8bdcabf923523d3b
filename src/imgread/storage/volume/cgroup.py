"""Kind volume's cgroup: where this process's capped cgroups are made (v1 blkio or v2 io,
see :mod:`imgread.storage.volume`), the lines that cap a disk's reads, what the cgroup was
served, and the leftovers of dead trials. The cgroup plumbing shared with the memory cgroup
(/proc/<pid>/cgroup, the mounts, moving a process) is imgread.instruments.memcg's."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from imgread.instruments import memcg
from imgread.storage.volume.device import Device

PREFIX = "imgread-"
NAME = re.compile(r"^imgread-(\d+)-(\d+)$")  # imgread-<pid>-<n>
V1_BPS, V1_IOPS = "blkio.throttle.read_bps_device", "blkio.throttle.read_iops_device"
V2_MAX = "io.max"


@dataclass(frozen=True)
class Place:
    """Where this process's capped cgroups are made: the hierarchy, the cgroup the process is
    in now, and the parent of the new ones."""

    version: str  # "v1" or "v2"
    mount: Path  # the hierarchy's root as this process sees it
    current: Path
    parent: Path

    @property
    def label(self) -> str:
        return "v1 blkio" if self.version == "v1" else "v2 io.max"


def place() -> Place | str:
    """Where the cgroup goes (v1 blkio first, else v2 with io), or one line why nowhere."""
    try:
        paths = memcg.cgroup_paths()
    except OSError as exc:
        return f"cannot read /proc/self/cgroup ({exc.strerror})"
    v2_reason = None
    for root, point, fstype, options in memcg.mounts():
        if fstype == "cgroup" and "blkio" in options.split(",") and "blkio" in paths:
            current = memcg.inside(point, root, paths["blkio"])
            if current is None:
                return f"this process's blkio cgroup {paths['blkio']} is outside {point}"
            if not (Path(point) / V1_BPS).exists():
                return f"the kernel has no blkio throttling ({point}/{V1_BPS} is missing)"
            return Place("v1", Path(point), current, Path(point))
    for root, point, fstype, _ in memcg.mounts():
        if fstype == "cgroup2" and "" in paths:
            current = memcg.inside(point, root, paths[""])
            if current is None:
                v2_reason = f"this process's cgroup {paths['']} is outside {point}"
                continue
            parent = current.parent if current != Path(point) else current
            controllers = memcg.words(parent / "cgroup.controllers")
            if "io" not in controllers:
                v2_reason = (
                    f"the cgroup v2 io controller is not available in {parent} "
                    f"(cgroup.controllers: {' '.join(controllers) or 'none'})"
                )
                continue
            if (
                "io" not in memcg.words(parent / "cgroup.subtree_control")
                and parent != Path(point)
                and memcg.procs(parent)
            ):
                v2_reason = (
                    f"{parent} has processes of its own, so cgroup v2 cannot enable io for "
                    "its children"
                )
                continue
            return Place("v2", Path(point), current, parent)
    return (
        v2_reason or "neither a cgroup v1 blkio hierarchy nor a cgroup v2 io controller is mounted"
    )


def cgroup_of(pid: int | str = "self") -> Path | None:
    """The folder of the cgroup a process is in, in the hierarchy :func:`place` picks (v1:
    blkio; v2: the unified one); None where there is none or the process is gone."""
    where = place()
    if isinstance(where, str):
        return None
    try:
        paths = memcg.cgroup_paths(pid)
    except (OSError, ValueError):
        return None
    key = "blkio" if where.version == "v1" else ""
    for root, point, _, _ in memcg.mounts():
        if Path(point) == where.mount and key in paths:
            return memcg.inside(point, root, paths[key])
    return None


def slurm_step() -> str:
    """ "inside SLURM job J step S: " where this runs in one, for a reason's start; "" else."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return ""
    step = os.environ.get("SLURM_STEP_ID")
    return f"inside SLURM job {job}" + (f" step {step}" if step else "") + ": "


def throttle_lines(version: str, device: Device, read_iops: int, read_mb_per_s: float) -> dict:
    """{file: line} that caps ``device``'s reads (MB: 1e6 bytes)."""
    bps = max(1, round(read_mb_per_s * 1e6))
    if version == "v1":
        return {V1_BPS: f"{device.id} {bps}", V1_IOPS: f"{device.id} {int(read_iops)}"}
    return {V2_MAX: f"{device.id} rbps={bps} riops={int(read_iops)}"}


def served(version: str, folder: Path, device: Device) -> tuple[int, int]:
    """(reads, bytes) the cgroup's processes have had from ``device`` so far (v1:
    blkio.throttle.io_serviced / io_service_bytes; v2: io.stat)."""
    if version == "v1":
        return (
            _v1_read(folder / "blkio.throttle.io_serviced", device),
            _v1_read(folder / "blkio.throttle.io_service_bytes", device),
        )
    for line in lines_of(folder / "io.stat"):
        dev, *pairs = line.split()
        if dev == device.id:
            kv = dict(p.split("=", 1) for p in pairs if "=" in p)
            return int(kv.get("rios", 0)), int(kv.get("rbytes", 0))
    return 0, 0


def _v1_read(path: Path, device: Device) -> int:
    for line in lines_of(path):
        parts = line.split()
        if len(parts) == 3 and parts[0] == device.id and parts[1] == "Read":
            return int(parts[2])
    return 0


def lines_of(path: Path) -> list[str]:
    """The lines of a cgroup file; [] where it cannot be read."""
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def leftovers(max_dirs: int = 20000) -> list[tuple[Path, Path]]:
    """(folder, hierarchy root) of every imgread-<pid>-<n> cgroup: v1 at the blkio root, v2
    anywhere in the unified hierarchy (a bounded walk)."""
    out = []
    for _, point, fstype, options in memcg.mounts():
        mount = Path(point)
        if fstype == "cgroup" and "blkio" in options.split(","):
            out += [(f, mount) for f in mount.glob(f"{PREFIX}*") if NAME.match(f.name)]
        elif fstype == "cgroup2":
            seen = 0
            for dirpath, dirnames, _ in os.walk(mount):
                seen += 1
                if seen > max_dirs:
                    break
                mine = [d for d in dirnames if NAME.match(d)]
                out += [(Path(dirpath) / d, mount) for d in mine]
                dirnames[:] = [d for d in dirnames if d not in mine]
    return out
