"""Kind volume's entry in the storage registry and its session: the process moved into a
cgroup that caps the dataset disk's reads for one trial (see :mod:`imgread.storage.volume`)."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from imgread.errors import UserError
from imgread.instruments import ceiling, memcg
from imgread.storage import base
from imgread.storage.local import FileOpener
from imgread.storage.volume.cgroup import (
    NAME,
    PREFIX,
    Place,
    leftovers,
    lines_of,
    place,
    served,
    slurm_step,
    throttle_lines,
)
from imgread.storage.volume.device import Device, block_device
from imgread.storage.volume.probe import (
    GAP_S,
    SMALL_IO,
    fio_names,
    io_block,
    probe_direct,
    probe_files,
    probe_with_fio,
)

LEAVE_WAIT_S = 5.0  # close: how long the cgroup's last tasks (reaped workers) may take to go
_counter = itertools.count(1)  # <n> of imgread-<pid>-<n>; 0 is missing()'s trial mkdir
_counter_lock = threading.Lock()


class VolumeSession(base.Session):
    """The process moved into a cgroup that caps the dataset disk's reads (module docstring)."""

    def __init__(self, profile: base.Profile, root: Path, where: Place, device: Device):
        self.opener = FileOpener()
        self.profile, self.root, self.where, self.device = profile, root, where, device
        self.pid = os.getpid()
        self.before = where.current  # where the process goes back to
        self.lines = throttle_lines(
            where.version, device, profile.params["read_iops"], profile.params["read_mb_per_s"]
        )
        self.folder = self._new_folder()
        self._closed = False
        self._enter()

    def _new_folder(self) -> Path:
        while True:
            with _counter_lock:
                n = next(_counter)
            folder = self.where.parent / f"{PREFIX}{self.pid}-{n}"
            if not folder.exists():  # one left by an earlier process with this pid: skip it
                return folder

    def _enter(self) -> None:
        """Make the cgroup, write the caps, move the process in; undo all of it on a failure."""
        moved = False
        try:
            if self.where.version == "v2" and "io" not in memcg.words(
                self.where.parent / "cgroup.subtree_control"
            ):
                (self.where.parent / "cgroup.subtree_control").write_text("+io\n")
            self.folder.mkdir()
            for name, line in self.lines.items():
                (self.folder / name).write_text(line + "\n")
                if not self._holds(name, line):
                    raise OSError(f"{self.folder / name} does not show {line!r} after writing it")
            memcg.move(self.pid, self.folder)
            moved = True
        except BaseException as exc:
            self._undo(moved)
            if isinstance(exc, OSError):
                raise UserError(
                    f"storage {self.profile.name} (volume): cannot cap {self.device.id} "
                    f"{self.device.name} in {self.folder}: {exc.strerror or exc}"
                ) from None
            raise

    def _holds(self, name: str, line: str) -> bool:
        dev, _, value = line.partition(" ")
        for shown in lines_of(self.folder / name):
            parts = shown.split()
            if parts and parts[0] == dev:
                return all(v in parts[1:] for v in value.split())  # v2 adds wbps=max ...
        return False

    def _undo(self, moved: bool) -> None:
        if moved:
            try:
                memcg.move(self.pid, self.before)
            except OSError:
                try:
                    memcg.move(self.pid, self.where.mount)
                except OSError:
                    pass  # remove_cgroup moves it out below
        if self.folder.exists():
            memcg.remove_cgroup(self.folder, self.before, 0.0)

    def settings(self) -> dict[str, Any]:
        return {
            "storage_device": f"{self.device.id} {self.device.name}",
            "storage_read_ahead_kb": self.device.read_ahead_kb,
            "storage_cgroup": self.where.label,
            "storage_throttle": "; ".join(f"{k}={v}" for k, v in self.lines.items()),
        }

    def served(self) -> tuple[int, int]:
        """(reads, bytes) this cgroup has had from the disk so far."""
        return served(self.where.version, self.folder, self.device)

    def probe(self) -> base.Probe:
        t0 = time.perf_counter()
        rnd = [(p, s) for p, s in probe_files(self.root) if s >= SMALL_IO]
        if not rnd:
            raise UserError(
                f"{self.root}: no file of at least {SMALL_IO} bytes to probe the volume with"
            )
        block = io_block(self.device.read_ahead_kb, [s for _, s in rnd])
        seq = [(p, s) for p, s in rnd if s >= block]  # whole blocks only, as fio reads
        fio = shutil.which("fio")
        names = (fio_names(self.root, seq), fio_names(self.root, rnd)) if fio else ([], [])
        if fio and all(names):
            got, method = probe_with_fio(fio, self.root, *names, block), "fio"
        else:
            if not ceiling.direct_supported(rnd[0][0]):
                raise UserError(
                    f"{self.root}: the filesystem refuses O_DIRECT and fio is not installed; "
                    "install fio (apt install fio) to probe the volume"
                )
            got, method = probe_direct(seq, rnd, block), "odirect"
        # Let the throttle forget the probe before the trial reads: while its slice lasts, the
        # bandwidth the 4 KiB phase left unused stays available, and the trial's first reads
        # ran far over the cap (seen: 2.5x for 42 MB read right after the probe; 1.08x after
        # an idle GAP_S, the slice's own first burst).
        time.sleep(GAP_S)
        return base.Probe(
            **got,
            seconds=time.perf_counter() - t0,
            detail={"method": method, "block_kb": block / 1024, "files": len(rnd)},
        )

    def close(self) -> None:
        if self._closed or os.getpid() != self.pid:  # a forked worker's copy owns nothing
            return
        self._closed = True
        try:
            try:
                memcg.move(self.pid, self.before)
                back = self.before
            except OSError:  # the cgroup it was in is gone: the hierarchy's root always is
                memcg.move(self.pid, self.where.mount)
                back = self.where.mount
            if not memcg.remove_cgroup(self.folder, back, LEAVE_WAIT_S):
                print(f"warning: could not remove {self.folder}", file=sys.stderr)
        except OSError as exc:
            print(f"warning: could not leave {self.folder}: {exc}", file=sys.stderr)


class VolumeKind(base.Kind):
    name = "volume"
    description = (
        "the dataset's files on this disk, read through a cgroup that caps the disk's read "
        "bandwidth and IOPS (a cloud volume: EBS, a persistent disk)"
    )
    needs = "root, and a cgroup v1 blkio hierarchy or the cgroup v2 io controller"
    settings = (
        base.Setting(
            "read_iops",
            int,
            3000,
            "read requests per second the volume allows",
            minimum=1,
            maximum=1e7,
        ),
        base.Setting(
            "read_mb_per_s",
            float,
            125.0,
            "read bandwidth the volume allows, MB/s (1e6 bytes)",
            minimum=0.1,
            maximum=1e5,
        ),
    )

    def __init__(self) -> None:
        self._missing: dict[int, str | None] = {}  # per process (a fork asks again)

    def missing(self) -> str | None:
        pid = os.getpid()
        if pid not in self._missing:
            self._missing[pid] = self._why_not()
        return self._missing[pid]

    def _why_not(self) -> str | None:
        uid = os.geteuid() if hasattr(os, "geteuid") else -1
        if uid != 0:
            return f"needs root to make a blkio cgroup (running as uid {uid})"
        where = place()
        if isinstance(where, str):
            return slurm_step() + where
        trial = where.parent / f"{PREFIX}{os.getpid()}-0"  # can one be made there at all?
        try:
            trial.mkdir()
            trial.rmdir()
        except FileExistsError:
            memcg.remove_cgroup(trial, where.mount, 0.0)
        except OSError as exc:
            return f"{slurm_step()}cannot make a cgroup in {where.parent} ({exc.strerror})"
        return None

    def open(self, profile: base.Profile, root: Path) -> base.Session:
        why = self.missing()
        if why:
            raise UserError(f"storage {profile.name} (volume) cannot run here: {why}")
        device = block_device(root)
        where = place()
        if isinstance(where, str):
            raise UserError(f"storage {profile.name} (volume) cannot run here: {where}")
        return VolumeSession(profile, Path(root), where, device)

    def sweep(self) -> list[str]:
        removed = []
        for folder, mount in leftovers():
            pid = int(NAME.match(folder.name).group(1))
            if memcg.alive(pid):
                continue
            if memcg.remove_cgroup(folder, mount, 0.0):
                removed.append(f"removed cgroup {folder} (its process {pid} is gone)")
        return removed

    def bandwidth_cap_mb_per_s(self, profile: base.Profile) -> float | None:
        return profile.params["read_mb_per_s"]

    def expected_latency_ms(self, profile: base.Profile) -> float | None:
        return None  # a volume promises bandwidth and IOPS, not a latency


KIND = VolumeKind()
