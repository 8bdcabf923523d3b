"""Memory per trial (imgread.instruments.memory): the recorded peak agrees with a reading this test
takes itself from /proc, what is counted (allocations, shared memory held or mapped) and what is not
(the page cache, another program's shared memory), and the trial's cgroup never outlives it (a
killed trial's is removed by the next). The memory in the results: test_memory_budget.py."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from imgread.dataset import GenerateParams, generate
from imgread.instruments.memcg import PREFIX
from imgread.instruments.memory import MemoryMeter

from ..support.helpers import HAVE_PROC, alive, children, trial_command

FOUR = ["--phase", "decode", "--variant", "processes", "--n", "12", "--workers", "4"]
needs_proc = pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")


def _cgroup_folder():
    """Where this process's trial cgroups go, if it may make them (root on cgroup v1/v2)."""
    with MemoryMeter(1, method="auto") as meter:
        return meter.cgroup.parent if meter.cgroup else None


CGROUPS = _cgroup_folder() if HAVE_PROC else None
needs_cgroup = pytest.mark.skipif(CGROUPS is None, reason="no memory cgroup may be made here")


def ours() -> list[Path]:
    """Trial cgroups under this process's cgroup."""
    return sorted(CGROUPS.glob(f"{PREFIX}*")) if CGROUPS else []


@pytest.fixture(scope="module")
def vga(tmp_path_factory) -> Path:
    """12 VGA JPEGs of ~80 KB (the manifest)."""
    out = tmp_path_factory.mktemp("vga") / "ds"
    params = GenerateParams(count=12, width=640, height=480, target_bytes=80_000)
    return generate(out, params, progress=False)


# ---------------------------------------------------------------- an independent reading


def _rollup(pid: int) -> tuple[int, int]:
    """(Pss_Anon + Pss_Shmem + VmPTE, Rss) of the process in bytes (zeros where it is gone):
    the proportional share of its anonymous and shared memory (smem's PSS without the file
    pages, page cache and library code, which the meter leaves out) and its page tables (the
    kernel memory a cgroup counts), from smaps_rollup and status."""
    kb = {}
    try:
        for name in ("smaps_rollup", "status"):
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("Pss_Anon", "Pss_Shmem", "Rss", "VmPTE"):
                    kb[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    mine = kb.get("Pss_Anon", 0) + kb.get("Pss_Shmem", 0) + kb.get("VmPTE", 0)
    return mine * 1024, kb.get("Rss", 0) * 1024


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo.extend(k for k in children(p) if alive(k))
        except FileNotFoundError:
            pass  # it ended
    return out


def _watch(proc: subprocess.Popen, workers: int) -> dict:
    """Sample the trial's tree (smem-style: PSS summed over the processes) every ~2 ms until
    it ends: each sample while all ``workers`` are alive, as (wall-clock start, end, PSS sum,
    RSS sum: what counting a shared page once per process would give), and the trial
    process's own largest PSS before the first worker appeared. Once the workers run, this
    test writes a 64 MB /dev/shm segment of its own, mapped by nobody: not the trial's."""
    seen: dict = dict(samples=[], before=0)
    while proc.poll() is None:
        began, tree = time.time(), _tree(proc.pid)
        if len(tree) == 1 and not seen["samples"]:  # it grows until it forks (then shares)
            seen["before"] = max(seen["before"], _rollup(proc.pid)[0])
        elif len(tree) == workers + 1:
            if not FOREIGN.exists():
                os.close(_shm_file(FOREIGN, 64))
            pss, rss = np.sum([_rollup(p) for p in tree], axis=0)
            seen["samples"].append((began, time.time(), pss, rss))
        time.sleep(0.002)
    return seen


def _in_clock(rec: dict, seen: dict) -> dict:
    """The samples taken while the trial's clock ran, from the record's own times: it starts
    ``startup_seconds`` + ``prepare_seconds`` after ``started_at`` (a few ms early: the
    meter is entered after ``started_at``) and lasts ``seconds``; the largest sums of them."""
    start = datetime.fromisoformat(rec["started_at"]).timestamp()
    start += rec["startup_seconds"] + rec["prepare_seconds"]
    end = start + rec["seconds"] + 0.01
    inside = [(p, r) for t0, t1, p, r in seen["samples"] if t1 >= start and t0 <= end]
    if len(inside) < 2:
        return None
    pss, rss = np.max(inside, axis=0)
    return dict(pss=int(pss), rss=int(rss), before=seen["before"], samples=len(inside))


def _shm_file(path: Path, mb: int) -> int:
    """A shared-memory file of ``mb`` MB, written, not mapped; its open descriptor."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    block = b"\x01" * 1_000_000
    for _ in range(mb):
        os.write(fd, block)
    return fd


FOREIGN = Path("/dev/shm") / f"imgread-test-foreign-{os.getpid()}"


def _run_watched(manifest: Path, out: Path, method: str) -> tuple[dict, dict]:
    """Run the 4-worker trial while watching it (again, up to 5 times, where the clock was
    too short for 2 samples of this test's own)."""
    env = {**os.environ, "IMGREAD_MEMORY": method}
    for _ in range(5):
        proc = subprocess.Popen(
            trial_command(manifest, out, *FOUR), env=env, stderr=subprocess.PIPE
        )
        try:
            seen = _watch(proc, 4)
        finally:
            FOREIGN.unlink(missing_ok=True)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        rec = json.loads(out.read_text())
        if (inside := _in_clock(rec, seen)) is not None:
            return rec, inside
    raise AssertionError("fewer than 2 samples while the clock ran, 5 times")


@needs_proc
@pytest.mark.parametrize("method", ["auto", "pss"])
def test_the_peak_of_a_trial_with_4_workers_agrees_with_a_reading_from_proc(vga, tmp_path, method):
    rec, seen = _run_watched(vga, tmp_path / "rec.json", method)
    expected = "pss-sampled" if method == "pss" or CGROUPS is None else "cgroup-"
    assert rec["memory_method"].startswith(expected)
    peak = rec["peak_memory_bytes"]
    print(
        f"{rec['memory_method']}: {peak} vs /proc {seen['pss']}: {peak / seen['pss'] - 1:+.1%} "
        f"({seen['samples']} samples); period {rec['memory_sample_period_s']}, sampler CPU "
        f"{rec['memory_sampler_cpu_s']}, clock {rec['seconds']:.3f} s"
    )
    # within 10 % of the test's own reading over the same clock, and counted once: the sum of
    # RSS (each shared page once per process) is far outside that: double counting fails
    assert abs(peak - seen["pss"]) <= 0.10 * seen["pss"], (peak, seen)
    assert seen["rss"] > 1.10 * seen["pss"]
    # the share per worker: what the 4 workers added over the process before they started
    added = seen["pss"] - seen["before"]
    assert rec["memory_per_worker_bytes"] == pytest.approx(
        (peak - rec["memory_baseline_bytes"]) / 4
    )
    assert abs(rec["memory_per_worker_bytes"] * 4 - added) <= 0.10 * seen["pss"], (rec, seen)
    if method == "pss":
        assert 0 < rec["memory_sample_period_s"] < 1 and rec["memory_sampler_cpu_s"] > 0
    else:
        assert rec["memory_sample_period_s"] is None and rec["memory_sampler_cpu_s"] is None
    assert not ours()


def _touch(n: int) -> bytearray:
    """``n`` bytes of anonymous memory, every page written."""
    block = bytearray(n)
    block[::4096] = b"x" * len(block[::4096])
    return block


@needs_proc
@pytest.mark.parametrize("method", ["auto", "pss"])
def test_memory_allocated_during_the_clock_is_in_the_peak(method):
    with MemoryMeter(1, method=method) as meter:
        meter.start()
        block = _touch(64_000_000)
        time.sleep(0.1)  # several sampling periods
        cols = meter.stop()
    del block
    assert 60e6 <= cols["peak_memory_bytes"] - cols["memory_baseline_bytes"] <= 90e6, cols
    assert (
        cols["memory_per_worker_bytes"] == cols["peak_memory_bytes"] - cols["memory_baseline_bytes"]
    )


@needs_proc
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("method", ["auto", "pss"])
def test_shared_memory_held_open_is_counted_by_its_pages_mapped_or_not(method, mapped):
    path = Path("/dev/shm") / f"imgread-test-held-{os.getpid()}"
    with MemoryMeter(1, method=method) as meter:
        meter.start()
        fd = _shm_file(path, 32)
        path.unlink()  # held open only, as PyTorch hands a batch over
        view = mmap.mmap(fd, 32_000_000) if mapped else None  # mapped, never touched
        time.sleep(0.1)
        cols = meter.stop()
        if view is not None:
            view.close()
        os.close(fd)
    assert 30e6 <= cols["peak_memory_bytes"] - cols["memory_baseline_bytes"] <= 45e6, cols


@needs_cgroup
def test_the_page_cache_of_files_read_during_the_clock_is_not_the_trials_memory(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1_000_000) * 100)
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold: every page read is charged
        with MemoryMeter(1) as meter:
            meter.start()
            while os.read(fd, 1 << 20):
                pass
            cols = meter.stop()
            usage = int((meter.cgroup.folder / meter.cgroup.peak_file).read_text())
    finally:
        os.close(fd)
    assert usage >= 90e6  # the cgroup was charged for the 100 MB read
    assert cols["peak_memory_bytes"] - cols["memory_baseline_bytes"] < 10e6, cols


def test_where_no_cgroup_can_be_made_the_meter_samples_pss(monkeypatch, tmp_path):
    monkeypatch.setattr(
        "imgread.instruments.memcg.current_cgroup", lambda: ("v1", tmp_path / "no" / "such")
    )
    with MemoryMeter(2) as meter:
        meter.start()
        cols = meter.stop()
    assert cols["memory_method"] == ("pss-sampled" if HAVE_PROC else "none")


# ---------------------------------------------------------------- the cgroup never stays


@needs_cgroup
@pytest.mark.parametrize("ending", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_the_cgroup_is_left_and_removed_however_the_trial_ends(ending):
    home = (Path("/proc/self/cgroup")).read_text()
    with pytest.raises(ending), MemoryMeter(1) as meter:
        assert meter.method.startswith("cgroup-")
        assert [p.name for p in ours()] == [f"{PREFIX}{os.getpid()}"]
        meter.start()
        raise ending()
    assert not ours()
    assert Path("/proc/self/cgroup").read_text() == home  # back where it was


def _wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Path:
    """60 larger JPEGs: a trial that lasts long enough to be killed in its work."""
    params = GenerateParams(count=60, width=1024, height=768, target_bytes=150_000, seed=5)
    return generate(tmp_path_factory.mktemp("slow") / "ds", params, progress=False)


@needs_cgroup
def test_a_trial_killed_by_sigterm_removes_its_cgroup(slow, tmp_path):
    proc = subprocess.Popen(
        trial_command(slow, tmp_path / "r.json", *FOUR[:4], "--n", "60", "--workers", "4"),
        stderr=subprocess.PIPE,
    )
    folder = CGROUPS / f"{PREFIX}{proc.pid}"
    _wait_for(lambda: len(_procs(folder)) >= 5 or proc.poll() is not None)
    # into the work: a SIGTERM while a worker is being forked is lost (Python ignores the
    # SystemExit raised in os.fork's logging hook), which is not what is tested here
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not folder.exists()


def _procs(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except OSError:
        return []


@needs_cgroup
def test_the_cgroup_of_a_trial_killed_by_sigkill_is_removed_by_the_next_trial(slow, vga, tmp_path):
    proc = subprocess.Popen(
        trial_command(slow, tmp_path / "r.json", *FOUR[:4], "--n", "60", "--workers", "4"),
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = CGROUPS / f"{PREFIX}{proc.pid}"
    orphans: list[int] = []
    try:
        _wait_for(lambda: len(_procs(folder)) >= 5 or proc.poll() is not None)
        orphans = [p for p in _procs(folder) if p != proc.pid]
        proc.kill()  # no clean-up can run: the cgroup stays, its workers still in it
        proc.wait(timeout=60)
        assert folder.exists()
        subprocess.run(trial_command(vga, tmp_path / "next.json", *FOUR), check=True)
        assert json.loads((tmp_path / "next.json").read_text())["memory_method"] != "pss-sampled"
        assert not folder.exists(), "the next trial left the killed trial's cgroup"
        assert not ours()
    finally:
        for pid in orphans:  # the killed trial's workers, which nothing else ends
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
