"""The litdata pipeline on an http profile: LitData's own S3 reader (boto3 for the index,
obstore for the chunks) reads ``s3://<bucket>/<chunks>`` from the session's emulated store
over TLS, unsigned, each chunk downloaded into the trial's empty cache_dir in the timed epoch;
a plain-http profile is refused with the reason (LitData's obstore store drops allow_http)."""

from __future__ import annotations

import pytest

pytest.importorskip("litdata")
pytest.importorskip("torchvision")

from imgread.dataset import GenerateParams, generate  # noqa: E402
from imgread.dataset import shards as shardlib  # noqa: E402
from imgread.errors import UserError  # noqa: E402
from imgread.storage.http.kind import KIND  # noqa: E402
from imgread.storage.http.server import BUCKET  # noqa: E402
from imgread.trial.run import TrialSpec, run_trial  # noqa: E402

WHY = KIND.missing()
needs_kind = pytest.mark.skipif(WHY is not None, reason=f"kind http cannot run here: {WHY}")
PARAMS = GenerateParams(count=10, width=640, height=480, target_bytes=150_000, seed=5)
TLS = {"name": "litdata-tls", "kind": "http", "latency_ms": 1, "bandwidth_mbit": 10000, "tls": True}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A dataset of its own (the chunks are written into it), packed into 1 MB tar shards."""
    manifest = generate(tmp_path_factory.mktemp("litremote") / "ds", PARAMS, progress=False)
    shardlib.pack(manifest, 1, progress=False)
    return manifest


def spec(manifest, n, workers, storage, **params):
    params = {"batch_size": 4, "source": "shards", "shard_mb": 1, **params}
    params["storage"] = storage["name"]
    return TrialSpec(
        str(manifest), "dataloader", "litdata", n, workers, params=params, storage=storage
    )


@needs_kind
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_https_profile_is_read_by_litdatas_own_s3_reader(packed, workers, page_cache):
    d = run_trial(spec(packed, 10, workers, TLS, page_cache=page_cache)).to_dict()
    assert d["storage_kind"] == "http" and d["images"] == 10 and d["samples_unique"] == 10
    assert d["pixel_mae_max"] <= 3.0
    assert d["litdata_remote_url"] == f"s3://{BUCKET}/litdata/1mb-10"
    assert d["litdata_reader"].startswith("s3")
    # every chunk downloaded in the timed epoch (the warm-up's were removed before the clock)
    assert d["litdata_downloaded_chunks"] == d["litdata_chunks"] == 2
    assert d["litdata_downloaded_bytes"] == d["litdata_chunk_bytes"]
    if page_cache == "cold":  # the server's files, evicted before the clock
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"


@needs_kind
def test_a_plain_http_profile_is_refused_with_the_reason(packed):
    plain = {"name": "litdata-plain", "kind": "http", "latency_ms": 1, "bandwidth_mbit": 10000}
    with pytest.raises(UserError, match="allow_http"):
        run_trial(spec(packed, 10, 0, plain, page_cache="warm"))
