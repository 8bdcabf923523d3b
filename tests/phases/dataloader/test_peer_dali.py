"""The dali-cpu pipeline: NVIDIA DALI's CPU-only pipeline as a DataLoader peer, run as real
trials (cold and warm, 1 and 2 threads, local files and a remote store), and the check after
the clock failing on what DALI yields when its last batch is left padded or wrapped, or its
centre crop left at DALI's own rounding."""

from __future__ import annotations

import pytest

from imgread.decoders import CROP
from imgread.errors import TrialError, VerificationError
from imgread.phases.dataloader.pipelines import dali_cpu
from imgread.phases.dataloader.pipelines import registry as pipelines
from imgread.storage import http as http_kind
from imgread.trial.run import TrialSpec, run_trial

pytest.importorskip("nvidia.dali")
WHY_NO_HTTP = http_kind.KIND.missing()


def dali_spec(manifest, n, workers, storage=None, **params):
    params.setdefault("batch_size", "4")
    if storage is not None:
        params["storage"] = storage["name"]
    return TrialSpec(
        str(manifest), "dataloader", "dali-cpu", n, workers, params=params, storage=storage
    )


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_epoch_yields_every_sample_once_within_the_pixel_limit(
    small_dataset, workers, page_cache
):
    d = run_trial(dali_spec(small_dataset, 10, workers, page_cache=page_cache)).to_dict()
    assert d["images"] == 10 and d["samples_unique"] == 10
    assert d["pixel_mae_max"] <= 2.0 and d["pixel_mae_mean"] <= d["pixel_mae_max"]
    assert d["output_pixels"] == 10 * 224 * 224 and d["batches"] == 3
    if page_cache == "cold":
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    else:
        assert d["resident_fraction_before"] >= 0.99
    assert d["num_threads"] == workers and d["prefetch_queue_depth"] == 2
    assert d["dali_version"] in d["pipeline_versions"]
    assert d["pipeline_versions"].startswith("nvidia-dali-cuda120==")
    assert "libjpeg_turbo_ext" in d["pipeline_decoder"]
    assert d["pipeline_reader"].startswith("fn.readers.file(dont_use_mmap=True")
    assert d["warm_up_samples"] == min(10, 4 * workers)
    assert 0 < d["first_batch_seconds"] <= d["seconds"] and d["startup_seconds"] > 0
    assert d["peak_rss_process_bytes"] > 0 and d["process_threads"] > workers


def test_a_remote_store_is_read_through_the_opener_by_an_external_source(small_dataset):
    toy = {"name": "toy", "kind": "memory"}
    d = run_trial(dali_spec(small_dataset, 9, 2, storage=toy)).to_dict()
    assert d["storage_kind"] == "memory" and d["samples_unique"] == 9
    assert d["pipeline_reader"].startswith("fn.external_source")
    assert d["reader_prefetch_queue_depth"] == 0 and d["pixel_mae_max"] <= 2.0


@pytest.mark.skipif(WHY_NO_HTTP is not None, reason=f"kind http cannot run here: {WHY_NO_HTTP}")
def test_an_http_profile_is_read_through_the_opener_cold(small_dataset):
    http = {"name": "peer-http", "kind": "http", "latency_ms": 2, "bandwidth_mbit": 1000}
    d = run_trial(dali_spec(small_dataset, 8, 2, storage=http, page_cache="cold")).to_dict()
    assert d["storage_kind"] == "http" and d["samples_unique"] == 8
    assert d["pipeline_reader"].startswith("fn.external_source")


@pytest.mark.parametrize("n,batch", [(3, 4), (4, 4), (8, 3)])
def test_an_epoch_of_one_batch_or_a_partial_last_one_is_exactly_n(small_dataset, n, batch):
    d = run_trial(dali_spec(small_dataset, n, 1, batch_size=str(batch))).to_dict()
    assert d["samples_unique"] == n and d["batches"] == -(-n // batch)
    assert d["prefetch_queue_depth"] == min(2, d["batches"])


@pytest.mark.parametrize("pad", [True, False], ids=["padded", "wrapped"])
def test_the_check_fails_when_the_last_batch_keeps_dalis_pad_or_wrap(
    small_dataset, monkeypatch, pad
):
    # DALI's reader fills the last batch: the last sample repeated (pad_last_batch) or, by
    # default, the next epoch's first samples
    monkeypatch.setattr(dali_cpu, "PAD_LAST_BATCH", pad)
    monkeypatch.setattr(dali_cpu, "TRIM_LAST_BATCH", False)
    with pytest.raises((TrialError, VerificationError), match="came more than once"):
        run_trial(dali_spec(small_dataset, 10, 1))


def _anchor_off_by(pixels: int):
    """A crop position ``pixels`` past the reference's floor anchor."""

    def pos(extent):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, types

        spare = extent - CROP
        moved = fn.cast(spare // 2 + pixels, dtype=types.FLOAT)
        return moved / fn.cast(dmath.max(spare, 1), dtype=types.FLOAT)

    return pos


def test_dalis_own_crop_rounding_passes_and_a_crop_four_pixels_off_fails(
    small_dataset, monkeypatch
):
    # crop_pos 0.5 anchors a 341-pixel side at round(58.5) = 59, a pixel off the reference's
    # floor: within the check's one-pixel tolerance (on these noisy images about 10 levels
    # at the reference's own window)
    monkeypatch.setattr(dali_cpu, "_crop_pos", lambda extent: 0.5)
    record = run_trial(dali_spec(small_dataset, 4, 1)).to_dict()
    assert record["images"] == 4 and record["pixel_mae_max"] <= 3.0
    monkeypatch.setattr(dali_cpu, "_crop_pos", _anchor_off_by(4))
    with pytest.raises((TrialError, VerificationError), match="levels on average"):
        run_trial(dali_spec(small_dataset, 4, 1))


def test_the_pipeline_is_registered_with_what_it_does_not_vary():
    p = pipelines.get("dali-cpu")
    assert p.min_workers == 1 and p.layout == "NCHW" and not p.exact
    assert p.allowed["decoder"] == ("pillow",) and p.allowed["pin_memory"] == ("false",)
    assert p.missing() is None
