"""Storage kind ``volume``: the cgroup caps hold on the real disk, for the probe and for a cold
buffered read; the process goes back and the cgroup goes away on every exit; children inherit
it; sweep removes a dead trial's cgroup only; bad profiles name their field.

Needs root and a blkio (v1) or io (v2) cgroup controller: those tests skip naming the reason
(the profile checks run anywhere). The dataset is made under tmp_path, which must be on a block
device (the caps throttle a disk), else they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgread.errors import UserError
from imgread.instruments import memcg, page_cache
from imgread.storage import registry, volume
from imgread.storage.volume import KIND

from ..support.helpers import ROOT

WHY = KIND.missing()
needs_volume = pytest.mark.skipif(WHY is not None, reason=f"volume kind cannot run here: {WHY}")

FAST = {"name": "vol-fast", "kind": "volume", "read_iops": 3000, "read_mb_per_s": 125}
SLOW = {"name": "vol-slow", "kind": "volume", "read_iops": 150, "read_mb_per_s": 100}
PROFILES = registry.parse_profiles([FAST, SLOW])
FILES, FILE_BYTES = 100, 200_000  # 20 MB: 100 cold reads of >= 1 IO each, 0.67 s at 150 IOPS
# blk-throttle lets at most (elapsed + one slice) x the cap through, and a slice may carry up to
# one more slice's unused IOs: over a short read, up to 2 x 100 ms of IOs come early
EARLY_S = 0.25


def _make(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:03d}.bin").write_bytes(os.urandom(size))
    try:
        volume.block_device(folder)
    except UserError as exc:
        pytest.skip(f"tmp_path is not on a block device: {exc}")
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """100 files of 200 KB random bytes on the real disk."""
    return _make(tmp_path_factory.mktemp("volume") / "ds", FILES, FILE_BYTES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """8 files of 50 KB."""
    return _make(tmp_path_factory.mktemp("volume-tiny") / "ds", 8, 50_000)


def _mine() -> list[Path]:
    where = volume.place()
    if isinstance(where, str):
        return []
    return sorted(where.parent.glob(f"imgread-{os.getpid()}-*"))


@pytest.fixture(autouse=True)
def no_cgroup_left():
    """Every test leaves this process where it was and none of its cgroups behind."""
    before = volume.cgroup_of()
    yield
    assert volume.cgroup_of() == before
    assert _mine() == []


# --------------------------------------------------------------------------- the caps hold


@needs_volume
@pytest.mark.parametrize("name", ["vol-fast", "vol-slow"])
def test_probe_sees_the_caps(dataset, name):
    profile = PROFILES[name]
    iops_cap, mb_cap = profile.params["read_iops"], profile.params["read_mb_per_s"]
    with registry.session(profile, dataset) as (session, probe):
        block = probe.detail["block_kb"] * 1024
        cols = {**session.settings(), **probe.columns()}
    print(name, {k: cols[k] for k in sorted(cols)})
    assert probe.detail["method"] == ("fio" if shutil.which("fio") else "odirect")
    assert block == FILE_BYTES // 4096 * 4096  # one buffered IO: a whole (small) file
    assert probe.seconds < 3.5
    assert 0 < probe.iops <= 1.1 * iops_cap
    assert 0 < probe.bandwidth_mb_per_s <= 1.1 * mb_cap
    assert probe.latency_ms is not None and probe.latency_ms > 0
    if name == "vol-slow":
        # 150 IOs of 200 KB a second is 31 MB/s: the IOPS cap binds both measurements
        assert probe.iops >= 0.5 * iops_cap
        assert probe.bandwidth_mb_per_s <= 1.1 * iops_cap * block / 1e6
        assert probe.bandwidth_mb_per_s >= 0.5 * iops_cap * block / 1e6


@needs_volume
def test_cold_buffered_read_is_capped(dataset):
    """The real reads, not only the probe's, are held to the cap: a cold read of 100 files takes
    at least its IOs / 150 IOPS (less what the throttle lets through early), and returns the
    files' bytes."""
    paths = sorted(dataset.iterdir())
    expected = [p.read_bytes() for p in paths]
    profile = PROFILES["vol-slow"]
    with registry.session(profile, dataset) as (session, _):
        ra_kb = session.settings()["storage_read_ahead_kb"]
        page_cache.evict(paths)
        resident = page_cache.resident_fraction(paths)
        ios0, bytes0 = session.served()
        t0 = time.perf_counter()
        got = [session.opener.read(str(p)) for p in paths]
        seconds = time.perf_counter() - t0
        ios1, bytes1 = session.served()
    ios, nbytes = ios1 - ios0, bytes1 - bytes0
    print(f"cold read: {seconds:.3f} s, {ios} IOs, {nbytes} bytes, read_ahead_kb {ra_kb}")
    assert got == expected
    assert resident is None or resident < 0.01
    total = FILES * FILE_BYTES
    assert nbytes >= 0.99 * total  # (nearly) every byte came from the disk, through this cgroup
    assert ios >= FILES  # a file is at least one IO
    iops, bps = profile.params["read_iops"], profile.params["read_mb_per_s"] * 1e6
    assert seconds >= 0.7 * total / (iops * ra_kb * 1024)
    assert seconds >= max(ios / iops, nbytes / bps) - EARLY_S


# --------------------------------------------------------------------------- life cycle


@needs_volume
def test_settings_close_and_children(dataset):
    before = volume.cgroup_of()
    session = KIND.open(PROFILES["vol-fast"], dataset)
    try:
        folder = session.folder
        assert folder.name.startswith(f"imgread-{os.getpid()}-")
        assert volume.cgroup_of() == folder
        st = os.stat(dataset)
        s = session.settings()
        dev = volume.block_device(dataset)
        assert s["storage_device"] == f"{dev.id} {dev.name}"
        if Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/partition").exists():
            assert dev.id != f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        fs_bdi = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        ra = (fs_bdi if fs_bdi.exists() else Path(f"/sys/dev/block/{dev.id}/queue")) / (
            "read_ahead_kb"
        )
        assert s["storage_read_ahead_kb"] == int(ra.read_text())
        assert s["storage_cgroup"] in ("v1 blkio", "v2 io.max")
        if s["storage_cgroup"] == "v1 blkio":
            assert (folder / volume.V1_BPS).read_text().split() == [dev.id, "125000000"]
            assert (folder / volume.V1_IOPS).read_text().split() == [dev.id, "3000"]
            assert s["storage_throttle"] == (
                f"{volume.V1_BPS}={dev.id} 125000000; {volume.V1_IOPS}={dev.id} 3000"
            )
        else:
            assert s["storage_throttle"] == f"io.max={dev.id} rbps=125000000 riops=3000"
        # a child forked now is in the capped cgroup; its copy of the session removes nothing
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                mine = str(volume.cgroup_of())
                session.close()
                os.write(write_fd, json.dumps([mine, folder.exists()]).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not finish in 10 s")
            time.sleep(0.01)
        with os.fdopen(read_fd) as fh:
            child_cgroup, still_there = json.loads(fh.read())
        assert child_cgroup == str(folder)
        assert still_there
        assert volume.cgroup_of() == folder
        # and so is a program it starts (fio is one)
        shown = subprocess.run(
            ["cat", "/proc/self/cgroup"], capture_output=True, text=True, check=True
        ).stdout
        rel = "/" + str(folder.relative_to(session.where.mount))
        assert any(line.endswith(":" + rel) for line in shown.splitlines())
    finally:
        session.close()
    assert volume.cgroup_of() == before
    assert not folder.exists()
    session.close()  # twice: nothing to do, no error


@needs_volume
def test_exception_inside_session_cleans_up(tiny):
    before = volume.cgroup_of()
    with pytest.raises(RuntimeError, match="boom"):
        with registry.session(PROFILES["vol-slow"], tiny) as (session, _):
            folder = session.folder
            assert volume.cgroup_of() == folder
            raise RuntimeError("boom")
    assert volume.cgroup_of() == before
    assert not folder.exists()


@needs_volume
@pytest.mark.parametrize("method", ["fio", "odirect"])
def test_tiny_dataset_probe(tiny, method, monkeypatch):
    """8 files of 50 KB: looped over for the probe's time, by fio or by the O_DIRECT reader."""
    if method == "fio" and shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    if method == "odirect":
        monkeypatch.setattr(shutil, "which", lambda name: None)
    profile = PROFILES["vol-slow"]
    with registry.session(profile, tiny) as (_, probe):
        pass
    print(method, probe.columns())
    assert probe.detail == {"method": method, "block_kb": 48.0, "files": 8, "attempts": 1}
    assert 0.5 * 150 <= probe.iops <= 1.1 * 150
    assert 0 < probe.bandwidth_mb_per_s <= 1.1 * 150 * 48 * 1024 / 1e6
    assert probe.latency_ms > 0


@needs_volume
def test_not_on_a_block_device():
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    with pytest.raises(UserError, match="not on a block device"):
        KIND.open(PROFILES["vol-fast"], shm)


# --------------------------------------------------------------------------- sweep


@needs_volume
def test_sweep_removes_dead_trials_cgroups_only():
    where = volume.place()
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process
    assert not memcg.alive(dead.pid)
    stale = where.parent / f"imgread-{dead.pid}-1"
    live = where.parent / f"imgread-{os.getpid()}-999999"
    sleeper = subprocess.Popen(["sleep", "30"])  # a dead trial's worker still in its cgroup
    try:
        stale.mkdir()
        live.mkdir()
        (stale / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        assert volume.cgroup_of(sleeper.pid) == stale
        lines = KIND.sweep()
        assert any(str(stale) in line for line in lines), lines
        assert not stale.exists()
        assert live.exists()
        assert volume.cgroup_of(sleeper.pid) == where.mount
        assert sleeper.poll() is None  # moved out, not killed
    finally:
        sleeper.kill()
        sleeper.wait()
        for folder in (stale, live):
            if folder.exists():
                memcg.remove_cgroup(folder, where.mount, 0.0)


# --------------------------------------------------------------------------- missing, profiles


@needs_volume
def test_missing_names_root_for_a_non_root_user():
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    code = "from imgread.storage.volume import KIND; print(KIND.missing())"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "ermission denied" in proc.stderr:
        pytest.skip(f"uid 65534 cannot run {sys.executable} or read {ROOT / 'src'}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "needs root to make a blkio cgroup (running as uid 65534)"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("read_iops", 0, "read_iops must be >= 1"),
        ("read_iops", 2.5, "read_iops must be a whole number"),
        ("read_mb_per_s", "fast", "read_mb_per_s must be a number"),
        ("read_mb_per_s", 0.01, "read_mb_per_s must be >= 0.1"),
        ("read_latency_ms", 1, "unknown field.*read_latency_ms"),
    ],
)
def test_bad_profiles_name_the_field(field, value, message):
    with pytest.raises(UserError, match=f"storage profile 'vol'.*{message}"):
        registry.parse_profiles([{"name": "vol", "kind": "volume", field: value}])


def test_defaults_and_caps():
    profile = registry.parse_profiles([{"name": "vol", "kind": "volume"}])["vol"]
    assert profile.params == {"read_iops": 3000, "read_mb_per_s": 125.0}
    assert isinstance(profile.params["read_mb_per_s"], float)
    assert KIND.bandwidth_cap_mb_per_s(profile) == 125.0
    assert KIND.expected_latency_ms(profile) is None
    # one buffered IO: the typical (median) file, within read_ahead_kb, in whole 4 KiB
    assert volume.io_block(8192, [5_000, 204_800, 204_800]) == 204_800
    assert volume.io_block(8192, [200_000]) == 196_608
    assert volume.io_block(128, [204_800]) == 128 * 1024
    assert volume.io_block(8192, [4096, 4500]) == 4096


def test_fio_names(tmp_path):
    files = [(tmp_path / n, 8192) for n in ("a.jpg", "b:c.jpg", "d#e.jpg", "f;g.jpg", "h.jpg")]
    assert volume.fio_names(tmp_path, files) == ["a.jpg", "b\\:c.jpg", "h.jpg"]
    many = [(tmp_path / f"{i:05d}.jpg", 8192) for i in range(1000)]
    names = volume.fio_names(tmp_path, many)
    assert 100 < len(names) < 1000 and len(":".join(names)) < 3600


def _fake_v2(tmp_path, monkeypatch, own: str, parent_controllers: str) -> Path:
    """A cgroup v2 tree in tmp_path (plain folders and files) and this process in ``own``."""
    mount = tmp_path / "cg"
    for folder, controllers in ((mount, "cpu io memory"), (mount / "a.slice", parent_controllers)):
        (folder / "b.scope").mkdir(parents=True)
        (folder / "cgroup.controllers").write_text(controllers + "\n")
        (folder / "cgroup.subtree_control").write_text("")
        (folder / "cgroup.procs").write_text("")
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::{own}\n")
    monkeypatch.setattr(memcg, "PROC", tmp_path / "proc")
    monkeypatch.setattr(memcg, "mounts", lambda: [("/", str(mount), "cgroup2", "rw")])
    return mount


def test_v2_place(tmp_path, monkeypatch):
    """v2 (not on this machine's v1 blkio): the cgroup goes beside the process's, under its
    parent, where the parent has io; the reasons otherwise."""
    mount = _fake_v2(tmp_path, monkeypatch, "/a.slice/b.scope", "cpu memory")
    assert "io controller is not available in" in volume.place()
    (mount / "a.slice" / "cgroup.controllers").write_text("cpu io memory\n")
    where = volume.place()
    assert where == volume.Place("v2", mount, mount / "a.slice/b.scope", mount / "a.slice")
    assert where.label == "v2 io.max"
    (mount / "a.slice" / "cgroup.procs").write_text("4242\n")  # the parent has a process
    assert "has processes of its own" in volume.place()
    (mount / "a.slice" / "cgroup.subtree_control").write_text("io\n")  # already enabled
    assert volume.place().parent == mount / "a.slice"
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/\n")  # at the root
    assert volume.place() == volume.Place("v2", mount, mount, mount)
    dev = volume.Device(254, 0, "vda", 128)
    assert volume.throttle_lines("v2", dev, 150, 100) == {
        "io.max": "254:0 rbps=100000000 riops=150"
    }
    (mount / "io.stat").write_text("254:0 rbytes=4096 wbytes=0 rios=1 wios=0\n")
    assert volume.served("v2", mount, dev) == (1, 4096)
