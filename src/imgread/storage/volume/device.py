"""Kind volume's disk: the whole block device a dataset lives on (a partition's parent disk,
the disk under btrfs's anonymous device number) and the read-ahead of its filesystem."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from imgread.errors import UserError
from imgread.instruments import memcg

SYS_BLOCK = Path("/sys/dev/block")
SYS_BDI = Path("/sys/class/bdi")


@dataclass(frozen=True)
class Device:
    """The whole disk a dataset lives on, and the read-ahead of its filesystem."""

    major: int
    minor: int
    name: str  # vda, sda, nvme0n1, dm-0
    read_ahead_kb: int

    @property
    def id(self) -> str:
        return f"{self.major}:{self.minor}"


def _mount_source(major: int, minor: int) -> tuple[str, str] | None:
    """(fstype, source) of the mount whose device number is ``major:minor``."""
    for fields, tail in memcg.mountinfo():
        if len(fields) >= 3 and len(tail) >= 2 and fields[2] == f"{major}:{minor}":
            return tail[0], tail[1]
    return None


def block_device(root: str | os.PathLike) -> Device:
    """The whole disk under ``root`` (a partition's parent disk); UserError where the dataset
    is not on a block device (tmpfs, overlay, a network filesystem)."""
    st = os.stat(root)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if not (SYS_BLOCK / f"{major}:{minor}").exists():
        # btrfs and the like report an anonymous device number: the mount's source names the disk
        fstype, source = _mount_source(major, minor) or ("unknown", "none")
        try:
            src = os.stat(source) if source.startswith("/") else None
        except OSError:
            src = None
        if src is None or not stat.S_ISBLK(src.st_mode):
            raise UserError(
                f"{root}: the dataset is on {fstype} (source {source}), not on a block device; "
                "a volume caps a disk's reads, so put the dataset on a disk's filesystem "
                "(ext4, xfs) to measure a volume profile"
            )
        major, minor = os.major(src.st_rdev), os.minor(src.st_rdev)
    fs_dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysdir = Path(os.path.realpath(SYS_BLOCK / f"{major}:{minor}"))
    if (sysdir / "partition").exists():  # a throttle holds on a whole disk only
        sysdir = sysdir.parent
        major, minor = (int(x) for x in (sysdir / "dev").read_text().split(":"))
    return Device(major, minor, sysdir.name, _read_ahead_kb(fs_dev, f"{major}:{minor}", sysdir))


def _read_ahead_kb(fs_dev: str, disk: str, sysdir: Path) -> int:
    """The read-ahead of the filesystem's backing device (its bdi), else of the disk's queue."""
    for path in (SYS_BDI / fs_dev, SYS_BDI / disk):
        try:
            return int((path / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            pass
    try:
        return int((sysdir / "queue" / "read_ahead_kb").read_text())
    except (OSError, ValueError):
        return 128  # the kernel's default
