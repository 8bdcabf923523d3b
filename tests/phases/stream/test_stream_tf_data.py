"""The stream's tf-data producer: real trials at fps 0 and a finite fps, frames within the
tolerance of the decoder's crop, the stream's latency columns."""

from __future__ import annotations

import numpy as np
import pytest

from imgread.errors import VerificationError
from imgread.phases.registry import get_phase
from imgread.phases.stream import tf_producer
from imgread.phases.stream.producers import arrivals
from imgread.trial.run import TrialSpec, run_trial

pytest.importorskip("tensorflow")


def stream_spec(manifest, n, workers=2, **params):
    params = {"decoder": "opencv", "compute_ms": "2", "prefetch": "2", **params}
    return TrialSpec(str(manifest), "stream", tf_producer.NAME, n, workers, params=params)


@pytest.mark.parametrize("fps", ["0", "100"])
def test_a_stream_of_tf_data_frames_is_checked_and_timed(small_dataset, fps):
    d = run_trial(stream_spec(small_dataset, 10, fps=fps)).to_dict()
    assert d["images"] == 10 and d["checksums_checked"] == 0
    assert 0 <= d["pixel_mae_max"] <= tf_producer.MAE_LIMIT
    for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms"):
        assert d[key] > 0
    assert d["latency_p50_ms"] <= d["latency_p99_ms"] <= d["latency_max_ms"]
    assert d["service_ms"] > 0 and 0 < d["au"] <= 1 and d["achieved_fps"] > 0
    assert d["num_parallel_calls"] == "AUTOTUNE" and d["tf_prefetch"] == 2
    assert d["private_threadpool_size"] == 2 and d["tf"].startswith("2.")
    frames = np.asarray(d["frames"])
    assert (frames[:, 1] >= frames[:, 0] - 1e-4).all()  # no frame released before it arrived
    if fps == "0":
        assert d["deadline_misses"] == -1
    else:
        assert d["deadline_effective_ms"] == 10.0 and d["deadline_misses"] >= 0
        assert frames[-1, 0] == pytest.approx(0.09)  # frame 9 arrives at 9 / 100 s


def test_frames_are_checked_against_the_decoders_crop(small_dataset):
    phase = get_phase("stream")
    ctx = phase.context(small_dataset, 3, "tf-data", 1, {"decoder": "opencv"})
    runner = tf_producer.start(ctx)
    try:
        out = runner.run(list(ctx.jobs))
    finally:
        runner.close()
    assert tf_producer.check_frames("opencv", out["paths"], out["frames"])["pixel_mae_max"]
    swapped = [f[:, :, ::-1] for f in out["frames"]]  # BGR for RGB
    with pytest.raises(VerificationError, match="levels on average"):
        tf_producer.check_frames("opencv", out["paths"], swapped)
    assert phase.missing("tf-data") is None and phase.missing("threads") is None
    # simplejpeg's 224 crop decodes at a DCT scale of its choosing: not a reference for it
    assert phase.unsupported("tf-data", phase.resolve({"decoder": "simplejpeg"}))


def test_other_storage_reads_frames_through_the_projects_opener(small_dataset):
    class Opener:
        local_files, reads = False, []

        def read(self, path):
            self.reads.append(path)
            with open(path, "rb") as fh:
                return fh.read()

    phase = get_phase("stream")
    ctx = phase.context(small_dataset, 4, "tf-data", 2, {"decoder": "opencv"})
    opener = Opener()
    runner = tf_producer.start(ctx.with_opener(opener))
    try:
        out = runner.run(list(ctx.jobs))
    finally:
        runner.close()
    assert sorted(opener.reads[-4:]) == sorted(j.path for j in ctx.jobs)
    tf_producer.check_frames("opencv", out["paths"], out["frames"])


def test_tf_data_follows_the_schedule_of_n_streams(small_dataset):
    d = run_trial(stream_spec(small_dataset, 8, fps="50", streams="4")).to_dict()
    assert d["streams"] == "4" and d["images"] == 8
    frames = np.asarray(d["frames"])
    assert np.allclose(frames[:, 0], arrivals(8, 50, 4), atol=1e-6)  # 4 at 0 ms, 4 at 20 ms
    assert (frames[:, 1] >= frames[:, 0] - 1e-4).all()  # none released before it arrived
    assert d["tf_prefetch"] == 8  # prefetch 2 per stream
