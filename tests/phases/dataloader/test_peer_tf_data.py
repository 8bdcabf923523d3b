"""The DataLoader's tf-data pipeline: real tf.data trials, its knobs (workers, ratio), its
record, and the peer check failing on a wrapped last batch."""

from __future__ import annotations

import numpy as np
import pytest

from imgread.dataset import GenerateParams, generate
from imgread.errors import VerificationError
from imgread.phases.dataloader.pipelines import tf_data
from imgread.phases.dataloader.pipelines.check import MAE_LIMIT, verify_peer
from imgread.phases.registry import get_phase
from imgread.trial.run import TrialSpec, run_trial

pytest.importorskip("tensorflow")


def tf_spec(manifest, n, workers, **params):
    params.setdefault("batch_size", 4)
    return TrialSpec(str(manifest), "dataloader", "tf-data", n, workers, params=params)


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    """Four JPEGs whose shorter side (600) covers 256 at ratio 2, not at 4."""
    out = tmp_path_factory.mktemp("big") / "ds"
    return generate(out, GenerateParams(count=4, width=640, height=600, target_bytes=60_000))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_epoch_yields_every_sample_checked(small_dataset, workers, page_cache):
    d = run_trial(tf_spec(small_dataset, 10, workers, page_cache=page_cache)).to_dict()
    assert d["images"] == 10 and d["samples_unique"] == 10 and d["batches"] == 3
    assert d["output_pixels"] == 10 * 224 * 224
    assert d["pixel_mae_max"] <= MAE_LIMIT and d["pixel_mae_limit"] == MAE_LIMIT
    assert 0 < d["first_batch_seconds"] <= d["seconds"] and d["startup_seconds"] > 0
    if page_cache == "cold":
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    else:
        assert d["resident_fraction_before"] >= 0.99
    assert d["num_parallel_calls"] == ("AUTOTUNE" if workers == 0 else 2)
    cores = d["cores"]
    assert d["private_threadpool_size"] == (workers or cores) and d["max_intra_op_parallelism"]
    assert d["tf"].startswith("2.") and d["pipeline_versions"].startswith("tensorflow")
    assert d["ratio"] == "1" and d["ratio_fallbacks"] == 0 and d["prefetch"] == "AUTOTUNE"
    assert {"tf_intra_op_threads", "tf_inter_op_threads", "pipeline_decoder"} <= set(d)


def test_ratio_applies_where_the_image_is_large_enough(big_dataset, small_dataset):
    big = run_trial(tf_spec(big_dataset, 4, 1, ratio="2")).to_dict()
    assert big["ratio"] == "2" and big["ratio_fallbacks"] == 0
    assert big["pixel_mae_max"] <= MAE_LIMIT
    # 600 / 4 < 256: every image decodes at ratio 1 instead, and is counted
    assert run_trial(tf_spec(big_dataset, 4, 1, ratio="4")).to_dict()["ratio_fallbacks"] == 4
    small = run_trial(tf_spec(small_dataset, 6, 1, ratio="2")).to_dict()  # 240 / 2 < 256
    assert small["ratio_fallbacks"] == 6 and small["pixel_mae_max"] <= MAE_LIMIT


def test_ratio_is_the_tf_data_pipelines_only():
    phase = get_phase("dataloader")
    params = phase.resolve({"ratio": "2"})
    assert phase.unsupported("tf-data", params) is None
    assert "ratio 1 only" in phase.unsupported("torch", params)
    assert phase.redundant("torch", params) and not phase.redundant("torch", phase.resolve({}))


def _runner_batches(small_dataset, n=6, batch=4):
    phase = get_phase("dataloader")
    ctx = phase.context(small_dataset, n, "tf-data", 1, {"batch_size": str(batch)})
    runner = tf_data.TfDataRunner(ctx)
    try:
        return ctx, runner.run(ctx.jobs)
    finally:
        runner.close()


def test_the_check_fails_on_a_wrapped_last_batch(small_dataset):
    ctx, batches = _runner_batches(small_dataset)
    assert [len(b[2]) for b in batches] == [4, 2]
    assert verify_peer(ctx, batches, "tf-data", "NHWC").images == 6
    images, labels, keys = batches[-1]
    # padded to a full batch with the epoch's first samples (DALI's default, drop_remainder=False)
    wrapped = (
        np.concatenate([images, batches[0][0][:2]]),
        np.concatenate([labels, batches[0][1][:2]]),
        np.concatenate([keys, batches[0][2][:2]]),
    )
    with pytest.raises(VerificationError, match="8 samples for 6 images: 2 came more"):
        verify_peer(ctx, [*batches[:-1], wrapped], "tf-data", "NHWC")
    with pytest.raises(VerificationError, match="4 samples for 6 images: 0 came more than once, 2"):
        verify_peer(ctx, batches[:-1], "tf-data", "NHWC")
    with pytest.raises(VerificationError, match="expected samples of NCHW"):
        verify_peer(ctx, batches, "tf-data", "NCHW")


class CountingOpener:
    """An opener of another storage kind (not local files): the bytes through ``read``."""

    local_files = False

    def __init__(self):
        self.reads: list[str] = []

    def read(self, path: str) -> bytes:
        self.reads.append(path)
        with open(path, "rb") as fh:
            return fh.read()


def test_other_storage_reads_through_the_projects_opener(small_dataset):
    phase = get_phase("dataloader")
    opener = CountingOpener()
    ctx = phase.context(small_dataset, 5, "tf-data", 2, {"batch_size": "2"}).with_opener(opener)
    runner = tf_data.TfDataRunner(ctx)
    before = len(opener.reads)  # the warm-up epoch's
    try:
        batches = runner.run(ctx.jobs)
    finally:
        runner.close()
    assert sorted(opener.reads[before:]) == sorted(j.path for j in ctx.jobs)
    assert verify_peer(ctx, batches, "tf-data", "NHWC").images == 5
