"""A search through the real workflow: smoke's dataset, a grid of two trials and smoke's
accelerator search (config/smoke.yaml's feed-torch: torch x1 on 8 images, 3 probes), run by
Snakemake; each probe a whole trial whose record is kept, the summary states its scale, and
results/tables/searches.csv has the search's row, in exactly its columns."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from imgread.trial.search_run import COLUMNS

from ..support.helpers import ROOT, copy_project, snakemake

pytestmark = pytest.mark.workflow

# smoke.yaml with every variant but two left out: the search is what runs
NONE = {"workers": []}
TINY = {
    "sizes": [8],
    "repetitions": 1,
    "phases": {
        "load": {"sequential": {"workers": [1]}, "asyncio": NONE, "threads": NONE},
        "decode": {v: NONE for v in ("sequential", "processes", "threads", "processes-shm")},
        "dataloader": {"torch": {"workers": [1], "decoder": ["simplejpeg"], "batch_size": [2]}},
        "stream": {
            v: NONE for v in ("sequential", "processes", "threads", "thread-per-frame", "asyncio")
        },
    },
    # smoke's accelerator search alone (other searches smoke may list are theirs to test)
    "searches": [
        s
        for s in yaml.safe_load((ROOT / "config/smoke.yaml").read_text())["searches"]
        if s["name"] == "feed-torch"
    ],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("torch")
    work = copy_project(tmp_path_factory.mktemp("search") / "imgread")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))  # params in order
    target = "results/tables/searches.csv"
    done = snakemake(work, target, "--cores", "1", "--configfile", "config/smoke.yaml", "tiny.yaml")
    return work, done


def test_every_probe_is_a_whole_trial_kept_beside_the_summary(run):
    work, done = run
    summary = json.loads((work / "results/searches/feed-torch.json").read_text())
    assert summary["key"] == "accel_rate" and summary["probes"] == 3
    probes = sorted((work / "results/searches/feed-torch").glob("probe-*.json"))
    assert [p.name for p in probes] == ["probe-1.json", "probe-2.json", "probe-3.json"]
    records = [json.loads(p.read_text()) for p in probes]
    assert [r["accel_rate"] for r in records][0] == "0"  # the unloaded trial first
    r0 = records[0]["images_per_s"]
    assert summary["first"]["images_per_s"] == r0
    for record, probe in zip(records[1:], summary["probe_values"][1:], strict=True):
        assert float(record["accel_rate"]) == probe["value"] and record["images"] == 8
        assert record["au"] == pytest.approx(probe["metric"])
        assert record["accel_busy_seconds"] == pytest.approx(8 / probe["value"], rel=0.2)
    # the top of the bracket first (R0), then, halving from above, the bracket's geometric
    # middle (sqrt(R0 / 32 x R0)): the dear bottom is not asked first
    values = [p["value"] for p in summary["probe_values"][1:]]
    lo = max(r0 / 32, 1)
    assert values[0] == round(r0) and values[1] == round((lo * max(r0, 1)) ** 0.5)
    assert summary["scale"]["simulated_images_per_s"] == summary["best"]
    log = (work / "results/logs/searches/feed-torch.log").read_text()
    assert "search feed-torch probe 3/3: accel_rate=" in log
    assert "search feed-torch probe 2/3" in done.stderr


def test_searches_csv_has_the_search_in_exactly_its_columns(run):
    work, _ = run
    table = pd.read_csv(work / "results/tables/searches.csv", keep_default_na=False)
    assert list(table.columns) == COLUMNS and len(table) == 1
    row = table.iloc[0]
    assert (row["name"], row["variant"], row["dataset"], row["storage"]) == (
        "feed-torch",
        "torch",
        "smoke",
        "local",
    )
    assert row["settings"] == "decoder=simplejpeg, batch_size=2, page_cache=warm"
    assert int(row["probes"]) == 3 and len(str(row["probe_values"]).split(";")) == 2
    summary = json.loads((work / "results/searches/feed-torch.json").read_text())
    best = "" if summary["best"] is None else str(int(summary["best"]))
    assert str(row["best"]) == best
