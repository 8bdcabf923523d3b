"""The stream phase: every producer with real threads, processes and an event loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from imgread.dataset import GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.errors import TrialError
from imgread.phases.registry import get_phase
from imgread.phases.stream.phase import frame_metrics
from imgread.phases.stream.producers import run_model
from imgread.trial.run import TrialSpec, run_trial

from ...support.deaths import (
    WORKERS_FAIL_TO_START,
    assert_failed_cleanly,
    first_child,
    kill_worker,
    shm_entries,
    wait_ended,
)
from ...support.helpers import (
    HAVE_PROC,
    corrupt_keeping_size_and_mtime,
    segments,
    start_trial,
    wait_for_workers,
)

PRODUCERS = [
    ("sequential", 1),
    ("processes", 2),
    ("threads", 2),
    ("thread-per-frame", 1),
    ("asyncio", 2),
]


def stream_spec(manifest, n, variant, workers, **params):
    params.setdefault("decoder", "simplejpeg")
    params.setdefault("prefetch", 3)
    return TrialSpec(str(manifest), "stream", variant, n, workers, params=params)


@pytest.mark.parametrize("variant,workers", PRODUCERS)
def test_every_producer_delivers_every_frame_in_order_and_checked(small_dataset, variant, workers):
    before = segments()
    d = run_trial(
        stream_spec(small_dataset, 10, variant, workers, fps=100, compute_ms=5, compute="sleep")
    ).to_dict()
    assert d["checksums_checked"] == 10 and d["images"] == 10
    frames = np.asarray(d["frames"])
    assert frames.shape == (10, 4)
    arrival, start, ready, done = frames.T
    assert np.allclose(arrival, np.arange(10) / 100, atol=1e-6)  # 100 fps
    assert (start >= arrival - 1e-4).all(), "a frame was read before it arrived"
    assert (ready >= start).all() and (done - ready >= 0.005 - 1e-4).all()
    assert (np.diff(done) > 0).all()  # in order, one at a time
    assert d["au"] == pytest.approx(10 * 0.005 / done[-1], rel=1e-4)  # times kept to 1 us
    assert d["achieved_fps"] == pytest.approx(10 / done[-1], rel=1e-4)
    assert d["latency_p50_ms"] <= d["latency_p95_ms"] <= d["latency_p99_ms"]
    assert d["deadline_effective_ms"] == pytest.approx(10.0) and d["deadline_misses"] >= 0
    assert segments() == before


def test_all_at_once_has_no_deadline_and_a_cold_start_is_proven(small_dataset):
    d = run_trial(stream_spec(small_dataset, 8, "threads", 2, page_cache="cold")).to_dict()
    assert np.allclose(np.asarray(d["frames"])[:, 0], 0.0)
    assert d["deadline_misses"] == -1 and np.isnan(d["deadline_effective_ms"])
    assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"


def test_the_cpu_model_holds_a_core_and_the_sleep_model_does_not():
    for kind, busy in (("cpu", True), ("sleep", False)):
        wall, cpu = time.perf_counter(), time.process_time()
        run_model(kind, 0.2)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert wall == pytest.approx(0.2, abs=0.05)
        assert (cpu > 0.15) == busy, (kind, cpu)


def test_frame_metrics_on_known_timestamps():
    # 5 frames at 10 fps; each done 50 ms after arrival except frame 4 (250 ms: late)
    times = [(i / 10, i / 10, i / 10 + 0.02, i / 10 + 0.05) for i in range(4)]
    times.append((0.4, 0.4, 0.6, 0.65))
    m = frame_metrics(times, fps=10, deadline_ms=0, compute_s=0.03, warmup=1)
    assert m["deadline_effective_ms"] == 100 and m["deadline_misses"] == 1
    assert m["deadline_miss_fraction"] == pytest.approx(0.2)
    assert m["latency_p50_ms"] == pytest.approx(50.0)
    assert m["latency_max_ms"] == pytest.approx(250.0)
    assert m["au"] == pytest.approx(5 * 0.03 / 0.65)
    assert m["achieved_fps"] == pytest.approx(5 / 0.65)
    assert m["service_ms"] == pytest.approx(50.0)
    assert m["warmup_frames"] == 1


def test_the_grid_skips_the_compute_kind_when_there_is_no_compute():
    stream = get_phase("stream")
    assert stream.redundant("threads", stream.resolve({"compute": "cpu"}))
    assert not stream.redundant("threads", stream.resolve({"compute": "cpu", "compute_ms": 5}))


@pytest.mark.parametrize("variant,workers", PRODUCERS)
def test_a_corrupted_frame_fails_the_trial_naming_it(tmp_path, variant, workers):
    ds = generate(
        tmp_path / "ds",
        GenerateParams(count=8, width=96, height=64, target_bytes=8000),
        progress=False,
    )
    m = read_manifest(ds)
    victim = m.root / m.entries[4].path
    corrupt_keeping_size_and_mtime(victim)
    with pytest.raises(TrialError) as info:
        run_trial(stream_spec(ds, 8, variant, workers))
    msg = str(info.value)
    assert "decoder simplejpeg" in msg and "no time recorded" in msg
    assert f"stream/{variant} decoder=simplejpeg fps=0" in msg
    assert threading_leftovers() == []


def threading_leftovers():
    time.sleep(0.1)
    return [t.name for t in threading.enumerate() if t.name.startswith("imgread-frame")]


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_a_killed_producer_stops_the_trial_naming_the_cell(tmp_path):
    ds = generate(
        tmp_path / "ds",
        GenerateParams(count=60, width=1600, height=1200, target_bytes=400_000),
        progress=False,
    )
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "stream", "--variant", "processes", "--fps", "20", "--decoder", "pillow")
    proc = start_trial(ds, out, *args, "--n", "60", "--workers", "2", tmpdir=tmp)
    workers = wait_for_workers(proc, settle=1.0)  # into the stream (60 frames at 20 fps: 3 s)
    ended = kill_worker(proc, workers)
    # Pool replaces the dead worker at once: the replacement must not be left running either
    cell = "stream/processes decoder=pillow fps=20"
    says = ("n=60 workers=2", "died", "killed by SIGKILL")
    assert_failed_cleanly(ended, proc, out, tmp, before, cell, *says)


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_a_producer_that_cannot_start_fails_the_trial_naming_the_cause(small_dataset, tmp_path):
    # multiprocessing.Pool would replace a worker whose initializer raised, again and again
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "stream", "--variant", "processes", "--n", "8", "--workers", "2")
    proc = start_trial(small_dataset, out, *args, prelude=WORKERS_FAIL_TO_START, tmpdir=tmp)
    ended = wait_ended(proc, *first_child(proc))
    cause = "failed to start: ImportError: no module for the opencv decoder in this worker"
    assert_failed_cleanly(ended, proc, out, tmp, before, "stream/processes decoder=", cause)
