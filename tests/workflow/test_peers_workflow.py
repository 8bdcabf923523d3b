"""Every library users run, through the real workflow (config/smoke-peers.yaml on top of
config/smoke.yaml): each DataLoader peer cold and warm, locally and from the overlay's own http
profile where it reads remote data, the stream's tf-data producer and every S3 client; each
trial checked after the clock, and the answer and the report name the libraries."""

from __future__ import annotations

import pandas as pd
import pytest

from imgread.phases.dataloader.pipelines import registry as pipelines
from imgread.phases.dataloader.pipelines.check import MAE_LIMIT
from imgread.storage.http.kind import KIND

from ..support.helpers import copy_project, snakemake

pytestmark = pytest.mark.workflow
PEERS = ("torchvision-imagefolder", "torchvision-io", "tf-data", "dali-cpu", "litdata")
MISSING = {p: pipelines.get(p).missing() for p in PEERS}
WHY = KIND.missing()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if WHY:
        pytest.skip(f"kind http cannot run here: {WHY}")
    work = copy_project(tmp_path_factory.mktemp("peers") / "imgread")
    configs = ["--configfile", "config/smoke.yaml", "config/smoke-peers.yaml"]
    # the tables and the one figure the tests read (the others would only be drawn)
    targets = ["results/tables/recommendation.md", "results/figures/dataloader_libraries.png"]
    done = snakemake(work, *targets, "--cores", "2", *configs)
    return work, done


def test_every_peer_runs_cold_and_warm_and_is_checked_after_the_clock(run):
    work, _ = run
    assert not any(MISSING.values()), f"a peer does not run on this machine: {MISSING}"
    trials = pd.read_csv(work / "results/tables/trials.csv")
    loader = trials[trials["phase"] == "dataloader"]
    for peer in PEERS:
        mine = loader[loader["variant"] == peer]
        local = mine[mine["storage"] == "local"]
        assert set(local["page_cache"]) == {"cold", "warm"}, peer
        assert (mine["images"] == 8).all() and (mine["samples_unique"] == 8).all(), peer
        assert (mine["pixel_mae_max"] <= MAE_LIMIT).all(), peer
        assert mine["pipeline_versions"].str.len().gt(0).all(), peer
        cold = local[local["page_cache"] == "cold"]
        assert (cold["resident_fraction_before"] <= 0.01).all(), peer  # proven cold
    remote = loader[loader["storage"] == "smoke-s3"]
    by = dict(zip(remote["variant"], remote["client"], strict=True))
    assert by == {
        "torch": "boto3",
        "torchvision-io": "obstore",
        "tf-data": "s3torchconnector",
        "dali-cpu": "imgread",
        "s3torch-map": "s3torchconnector",
    }
    sdk = remote[remote["client"] != "imgread"]  # the SDKs record themselves
    assert (sdk["storage_client"] == sdk["client"]).all() and len(sdk) == 4


def test_the_stream_tf_data_producer_and_every_s3_client_ran(run):
    work, _ = run
    trials = pd.read_csv(work / "results/tables/trials.csv")
    stream = trials[(trials["phase"] == "stream") & (trials["variant"] == "tf-data")]
    assert sorted(stream["fps"].astype(int)) == [0, 200] and (stream["images"] == 8).all()
    assert stream["latency_p99_ms"].gt(0).all() and stream["pixel_mae_max"].le(MAE_LIMIT).all()
    load = trials[(trials["phase"] == "load") & (trials["storage"] == "smoke-s3")]
    clients = {"imgread", "boto3", "obstore", "s3torchconnector"}
    for variant in ("threads", "asyncio"):
        assert set(load[load["variant"] == variant]["client"]) == clients
    sdk = load[load["client"] != "imgread"]
    assert (sdk["storage_client"] == sdk["client"]).all() and (sdk["images"] == 8).all()
    assert (load["client_cpu_ms_per_request"] > 0).all()


def test_the_answer_and_the_report_name_the_libraries(run):
    work, done = run
    rec = pd.read_csv(work / "results/tables/recommendation.csv")
    mine = rec[(rec["phase"] == "dataloader") & (rec["dataset"] == "smoke")]
    local = mine[mine["job"].str.contains("storage=local")]
    assert len(local) == 2 and local["x_imagefolder"].gt(0).all()  # cold and warm
    # from the object store ImageFolder reads no folder: no figure there
    assert mine[mine["job"].str.contains("storage=smoke-s3")]["x_imagefolder"].isna().all()
    assert (work / "results/figures/dataloader_libraries.png").stat().st_size > 10_000
    md = (work / "results/tables/recommendation.md").read_text()
    assert "x ImageFolder" in md
    assert "Traceback" not in done.stdout + done.stderr
    for log in (work / "results/logs").rglob("*"):
        if log.is_file():
            assert "Traceback" not in log.read_text(errors="replace"), log
