"""The litdata pipeline: real litdata.optimize chunks, a real StreamingDataLoader with real
workers, cold and warm; chunks made once and reused; the check after the clock failing on a
duplicated or a dropped sample."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("litdata")
pytest.importorskip("torchvision")

from imgread.dataset import GenerateParams, generate  # noqa: E402
from imgread.dataset import litdata_chunks as chunklib  # noqa: E402
from imgread.dataset import shards as shardlib  # noqa: E402
from imgread.dataset.manifest import read_manifest  # noqa: E402
from imgread.errors import VerificationError  # noqa: E402
from imgread.phases.dataloader.pipelines import registry  # noqa: E402
from imgread.phases.dataloader.pipelines.check import verify_peer  # noqa: E402
from imgread.phases.dataloader.pipelines.litdata_stream import LitDataRunner  # noqa: E402
from imgread.trial.run import TrialSpec, prepare, run_trial  # noqa: E402

# 10 images of ~150 KB: two tar shards (and two litdata chunks) of 1 MB, one per worker
PARAMS = GenerateParams(count=10, width=640, height=480, target_bytes=150_000, seed=5)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A dataset of its own (the chunks are written into it), packed into 1 MB tar shards."""
    manifest = generate(tmp_path_factory.mktemp("litdata") / "ds", PARAMS, progress=False)
    shardlib.pack(manifest, 1, progress=False)
    return manifest


def spec(manifest, n, workers, **params):
    params = {"batch_size": 4, "source": "shards", "shard_mb": 1, **params}
    return TrialSpec(str(manifest), "dataloader", "litdata", n, workers, params=params)


def test_the_pipeline_is_registered_with_what_it_takes():
    p = registry.get("litdata")
    assert p.allowed["source"] == ("shards",) and p.allowed["client"] == ("imgread",)
    assert "storage" not in p.allowed  # http profiles through LitData's own S3 reader
    assert p.layout == "NCHW" and not p.exact and p.cache_files.endswith(":chunk_files")


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_epoch_yields_every_sample_once_checked(packed, workers, page_cache):
    d = run_trial(spec(packed, 10, workers, page_cache=page_cache)).to_dict()
    assert d["images"] == 10 and d["samples_unique"] == 10
    assert d["pixel_mae_max"] <= 3.0 and d["output_pixels"] == 10 * 224 * 224
    if page_cache == "cold":  # the chunk files themselves, evicted with the mappings closed
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    else:
        assert d["resident_fraction_before"] >= 0.99
    assert d["litdata_chunks"] == 2 and d["litdata_chunk_bytes"] > 1_000_000
    assert d["litdata_cache_dir_files"] == 0  # a local input folder is read in place
    assert d["litdata_shuffle"] is False and d["litdata"] in d["pipeline_versions"]
    assert d["persistent_workers"] == (workers > 0) and d["num_workers"] == workers
    assert d["worker_torch_threads"] == (1 if workers else 0) and d["torch_threads"] == 1
    assert (d["peak_rss_workers_bytes"] > 0) == (workers > 0)
    assert 0 < d["first_batch_seconds"] <= d["seconds"]


def test_chunks_are_made_once_then_reused_and_a_stale_folder_replaced(packed):
    m = read_manifest(packed)
    made = chunklib.ensure(m, 6, 1)
    assert made.made and made.seconds > 0 and made.folder == chunklib.chunk_dir(m.root, 1, 6)
    mtimes = [(made.folder / c).stat().st_mtime_ns for c in made.chunks]
    again = chunklib.ensure(m, 6, 1)
    assert not again.made and again.seconds == 0 and again.chunks == made.chunks
    assert [(again.folder / c).stat().st_mtime_ns for c in again.chunks] == mtimes
    stamp = made.folder / chunklib.STAMP_NAME
    stamp.write_text(json.dumps(dict(json.loads(stamp.read_text()), dataset_id="other")))
    assert chunklib.ensure(m, 6, 1).made  # another version of the dataset: made afresh
    assert not [p for p in made.folder.parent.iterdir() if p.name.startswith(".")]


def test_two_trials_making_the_same_chunks_at_once_share_one_folder(packed):
    m = read_manifest(packed)
    out, errors = [], []

    def make():
        try:
            out.append(chunklib.ensure(m, 4, 1))
        except Exception as exc:  # pragma: no cover - the assertion below says
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 2
    folder = chunklib.chunk_dir(m.root, 1, 4)
    assert chunklib.ensure(m, 4, 1).made is False
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def _epoch(manifest, n, workers):
    t = prepare(spec(manifest, n, workers))
    runner = LitDataRunner(t.ctx)
    try:
        return t.ctx, runner.run(list(t.ctx.jobs))
    finally:
        runner.close()


def test_the_check_fails_on_a_duplicated_or_a_dropped_sample(packed):
    ctx, batches = _epoch(packed, 10, 2)
    assert verify_peer(ctx, batches, "litdata").images == 10
    images, labels, keys = batches[-1]
    first = [x[:1] for x in batches[0]]  # a last batch wrapped round to the epoch's start
    wrapped = tuple(np.concatenate([a, b]) for a, b in zip(batches[-1], first, strict=True))
    with pytest.raises(VerificationError, match="1 came more than once, 0 never"):
        verify_peer(ctx, [*batches[:-1], wrapped], "litdata")
    dropped = [*batches[:-1], (images[:-1], labels[:-1], keys[:-1])]
    with pytest.raises(VerificationError, match="1 never"):
        verify_peer(ctx, dropped, "litdata")
