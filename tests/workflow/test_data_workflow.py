"""The data as ML users have it, end to end through the real workflow (config/smoke-data.yaml
on top of config/smoke.yaml): three datasets in one run, one packed into tar shards and read
whole by the load phase and by the DataLoader's webdataset source (locally, and over http
where this machine can emulate it), one in a format some decoders cannot read (left out with
a line, not failed); the records, the answer and the figures carry the dataset."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from imgread.storage import registry

from ..support.helpers import copy_project, snakemake

pytestmark = pytest.mark.workflow
STUDY = ["--configfile", "config/smoke.yaml", "config/smoke-data.yaml"]
FIGURES = ("load_shards", "dataloader_shards", "decode_encodings")


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    work = copy_project(tmp_path_factory.mktemp("data") / "imgread")
    # the tables and the figures the tests read (the others would only be drawn)
    targets = ["results/tables/recommendation.md", "results/tables/summary.csv"]
    targets += [f"results/figures/{n}.png" for n in FIGURES]
    proc = snakemake(work, *targets, "--cores", "2", *STUDY)
    return work, proc, pd.read_csv(work / "results/tables/trials.csv")


def test_each_dataset_has_its_own_files_trials_and_records(data_run):
    work, _, trials = data_run
    assert set(trials["dataset"]) == {"smoke", "smoke-shards", "smoke-png"}
    for name in ("smoke", "smoke-shards", "smoke-png"):
        assert (work / f"results/datasets/{name}/manifest.csv").is_file()
        assert list((work / f"results/trials/{name}").rglob("*.json"))
    png = trials[trials["dataset"] == "smoke-png"]
    assert (png["dataset_encoding"] == "PNG").all()
    shards = trials[trials["dataset"] == "smoke-shards"]
    assert shards["dataset_encoding"].str.startswith("JPEG q").all()
    study = json.loads((work / "results/tables/study.json").read_text())
    assert study["dataset"]["name"] == "smoke"
    assert [d["name"] for d in study["datasets"]] == ["smoke", "smoke-shards", "smoke-png"]


def test_a_decoder_that_cannot_read_a_format_is_left_out_with_a_line(data_run):
    _, proc, trials = data_run
    out = proc.stdout + proc.stderr
    for decoder in ("simplejpeg", "turbojpeg"):
        assert (
            f"decode cells with decoder {decoder} on dataset smoke-png (png) are left out: "
            f"{decoder} does not decode png" in out
        )
    png = trials[(trials["dataset"] == "smoke-png") & (trials["phase"] == "decode")]
    assert set(png["decoder"]) == {"pillow", "opencv"}
    jpeg = trials[(trials["dataset"] == "smoke") & (trials["phase"] == "decode")]
    assert {"simplejpeg", "turbojpeg"} <= set(jpeg["decoder"])


def test_the_load_phase_reads_whole_shards_and_checks_every_image(data_run):
    _, _, trials = data_run
    load = trials[(trials["phase"] == "load") & (trials["dataset"] == "smoke-shards")]
    assert {int(x) for x in load["shard_mb"]} == {0, 1, 2}
    packed = load[load["shard_mb"].astype(int) > 0]
    assert (packed["images"] == 24).all()
    assert (packed["shards_read"] >= 2).all()
    assert (packed["shard_images_read"] >= 24).all()
    # smaller shards: more of them for the same images
    reads = packed.groupby(packed["shard_mb"].astype(int))["shards_read"].max()
    assert reads[1] > reads[2]
    cold = load[load["cache_state"] == "cold"]
    assert len(cold) == len(load) and (cold["resident_fraction_before"] <= 0.01).all()


def test_the_dataloader_reads_shards_with_webdataset_each_sample_once(data_run):
    _, _, trials = data_run
    dl = trials[(trials["phase"] == "dataloader") & (trials["source"] == "shards")]
    assert set(dl["workers"]) == {0, 2}
    assert (dl["samples_unique"] == 24).all() and (dl["images"] == 24).all()
    assert (dl["shuffle_buffer"] == 1000).all()
    loose = trials[(trials["phase"] == "dataloader") & (trials["source"] == "jpeg")]
    assert (loose["shard_mb"].astype(int) == 0).all()


def test_shards_are_read_over_http_where_it_can_be_emulated(data_run):
    _, _, trials = data_run
    http = trials[trials["storage"] == "smoke-http"]
    why = registry.KINDS["http"].missing()
    if why:
        pytest.skip(f"http: {why}")
    packed = http[http["shard_mb"].astype(int) > 0]
    assert set(packed["phase"]) == {"load", "dataloader"}
    assert (packed["images"] == 24).all()


def test_the_answer_and_figures_compare_the_datasets(data_run):
    work, _, _ = data_run
    answer = (work / "results/tables/recommendation.md").read_text()
    assert "| dataset | phase |" in answer
    assert "| smoke-shards | load | storage=local, shard_mb=1 |" in answer
    summary = pd.read_csv(work / "results/tables/summary.csv")
    assert {"smoke", "smoke-shards", "smoke-png"} <= set(summary["dataset"])
    for name in FIGURES:
        assert (work / f"results/figures/{name}.png").stat().st_size > 10_000
        caption = (work / f"results/report/{name}.rst").read_text()
        assert "{" not in caption  # every field filled
