"""Accelerator profiles and the training rows projected onto them, on hand-made records whose
rates, CPU, latency and bandwidth are known, so the accelerators fed, the cores, the requests
in flight and the binding resource are known too; and the sentences the answer opens with."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imgread.answer.accelerators import Accelerator, profiles
from imgread.answer.analysis import flag_interference, summarize, with_all_keys
from imgread.answer.first_screen import accelerators_markdown, sentences
from imgread.answer.keys import CURVE
from imgread.answer.projections import project
from imgread.answer.recommend import markdown, recommend
from imgread.errors import UserError
from imgread.plan.schema import check_schema
from imgread.storage.registry import parse_profiles

ROOT = Path(__file__).resolve().parents[2]
STORE = parse_profiles(
    [{"name": "object-store", "kind": "http", "latency_ms": 20, "bandwidth_mbit": 1000}]
)
ONE_K = Accelerator("k1", "a test model", 1000.0, "this test")


def _trials(cells: dict, storage="object-store", page_cache="cold", **extra) -> pd.DataFrame:
    """DataLoader trials, 3 per cell: {(variant, workers): (images/s, CPU s per image, bytes
    per image)}, 64 images each, 2 cores, 8 requests in flight, the probe's 20 ms and 125 MB/s."""
    rows = []
    for (variant, workers), (rate, cpu, size) in cells.items():
        for r in range(3):
            rows.append(
                dict(
                    phase="dataloader",
                    variant=variant,
                    decoder="opencv",
                    storage=storage,
                    page_cache=page_cache,
                    n_images=64,
                    images=64,
                    workers=workers,
                    repetition=r,
                    seconds=64 / rate,
                    startup_seconds=1.0,
                    total_seconds=64 / rate + 1.0,
                    images_per_s=rate,
                    megapixels_per_s=rate / 5,
                    mb_per_s=rate * size / 1e6,
                    bytes=64 * size,
                    own_cpu_seconds=64 * cpu,
                    concurrency=8,
                    physical_cores=2,
                    logical_cores=2,
                    interference_fraction=0.0,
                    steal_seconds=0.0,
                    other_cpu_seconds=0.0,
                    **extra,
                )
            )
    return with_all_keys(pd.DataFrame(rows))


PROBED = dict(probe_latency_ms=20.0, probe_bandwidth_mb_per_s=125.0)


def _row(acc: pd.DataFrame, variant: str = "torch") -> pd.Series:
    return acc[acc["variant"] == variant].iloc[0]


def test_the_default_profiles_are_mlperf_storages_resnet50_on_h100_and_a100():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    h100, a100 = profiles(config["accelerators"])
    assert h100.images_per_s == pytest.approx(400 / 0.224)  # about 1786
    assert a100.images_per_s == pytest.approx(400 / 0.435)  # about 919.5
    assert "resnet50_h100.yaml" in h100.source and "ResNet-50" in h100.runs
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    assert schema["properties"]["accelerators"]["default"] == config["accelerators"]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "x", "batch_size": 256}, "accelerators[0].step_s"),
        ({"name": "x", "step_s": 0.5}, "accelerators[0].batch_size"),
        ({"name": "x", "images_per_s": 10, "step_s": 0.5}, "accelerators[0].images_per_s"),
        ({"name": "x", "images_per_s": -1}, "accelerators[0].images_per_s"),
        ({"name": "x", "batch_size": 2.5, "step_s": 1}, "accelerators[0].batch_size"),
        ({"runs": "no name", "images_per_s": 1}, "accelerators[0].name"),
    ],
)
def test_a_bad_profile_is_one_line_naming_its_field(entry, field):
    with pytest.raises(UserError, match="^" + re.escape(f"config '{field}':")) as err:
        profiles([entry])
    assert "\n" not in str(err.value)


def test_a_users_own_model_by_step_and_batch_and_the_schema_names_a_wrong_type():
    (own,) = profiles([{"name": "mine", "runs": "ViT-B", "batch_size": 256, "step_s": 0.5}])
    assert own.images_per_s == 512 and own.label == "mine (ViT-B, 512 images/s)"
    with pytest.raises(UserError, match=r"^config 'accelerators\[1\]\.name'"):
        profiles([{"name": "a", "images_per_s": 1}, {"name": "a", "images_per_s": 2}])
    config = {"phases": {}, "accelerators": [{"name": "x", "step_s": "fast"}]}
    with pytest.raises(UserError, match=r"config 'accelerators\[0\]\.step_s'"):
        check_schema(config, ROOT / "config/schema.yaml")


def test_known_rates_latency_and_bandwidth_give_known_projections():
    t = _trials(
        {("torch", 2): (100.0, 0.01, 110_000), ("tf-data", 4): (50.0, 0.002, 500_000)}, **PROBED
    )
    acc = project(t, [ONE_K], storage=STORE)
    assert len(acc) == 2  # one row per pipeline library x accelerator profile
    torch = _row(acc)
    assert torch["measured_share"] == pytest.approx(0.1)  # 100 of 1000 images/s
    assert torch["projected_cores_upper_bound"] == pytest.approx(10)  # 1000 x 0.01 CPU s
    assert torch["projected_in_flight_little"] == pytest.approx(20)  # 1000/s x 20 ms
    assert torch["latency_from"] == "probe (measured)"
    assert torch["projected_mb_per_s"] == pytest.approx(110)  # 1000 x 110 kB
    assert torch["allowed_mb_per_s"] == pytest.approx(125)
    # cores: 10 needed / 2 here = 5; in flight 20 / 8 = 2.5; bandwidth 110 / 125
    assert (torch["binds_first"], torch["binds_first_factor"]) == ("cores", pytest.approx(5))
    tf = _row(acc, "tf-data")
    # 2 cores are enough (2 / 2 = 1), but 500 MB/s of the 125 allowed: bandwidth binds, x4
    assert tf["binds_first"] == "storage bandwidth"
    assert tf["binds_first_factor"] == pytest.approx(4)
    assert math.isnan(torch["projected_workers_usl"]) and torch["usl_note"].startswith("none")


def test_without_a_probe_the_profiles_latency_and_bandwidth_are_used_and_said():
    t = _trials({("torch", 2): (100.0, 0.01, 110_000)})
    row = _row(project(t, [ONE_K], storage=STORE))
    assert row["latency_from"] == "profile (configured)" and row["latency_ms"] == 20
    assert row["allowed_from"] == "profile (configured)" and row["allowed_mb_per_s"] == 125
    local = _row(project(_trials({("torch", 2): (100.0, 0.01, 1e6)}, "local"), [ONE_K], {}))
    assert math.isnan(local["projected_in_flight_little"])  # local files: no request latency
    # read cold from local files: the dataset's device ceiling, measured
    cold = _row(
        project(_trials({("torch", 2): (100.0, 0.01, 1e6)}, "local"), [ONE_K], devices={"-": 400.0})
    )
    assert cold["allowed_from"] == "device ceiling (measured)" and cold["allowed_mb_per_s"] == 400


def _fit(t: pd.DataFrame, **fit) -> pd.DataFrame:
    first = t.iloc[0]
    return pd.DataFrame([{**{k: first[k] for k in CURVE}, "status": "ok", **fit}])


def test_the_usl_figure_only_from_a_fit_and_it_bends_the_upper_bound():
    t = _trials({("torch", 2): (100.0, 0.01, 110_000)}, **PROBED)
    linear = _row(project(t, [ONE_K], _fit(t, a=0.0, b=0.0), STORE))
    assert linear["projected_workers_usl"] == 20  # 100 images/s at 2 workers, x N / 2
    contended = _row(project(t, [ONE_K], _fit(t, a=0.05, b=0.0), STORE))
    assert contended["projected_workers_usl"] > 20
    peaked = _row(project(t, [ONE_K], _fit(t, a=0.1, b=0.01), STORE))
    assert math.isnan(peaked["projected_workers_usl"]) and "reaches at most" in peaked["usl_note"]
    one_core = _trials({("torch", 2): (100.0, 0.01, 110_000)}).assign(logical_cores=1)
    alone = _row(project(one_core, [ONE_K], _fit(one_core, a=0.0, b=0.0), STORE))
    assert math.isnan(alone["projected_workers_usl"]) and "beyond one core" in alone["usl_note"]


def test_a_search_and_a_limited_page_cache_are_read_where_they_exist():
    t = _trials({("torch", 2): (100.0, 0.01, 110_000)}, **PROBED)
    searches = pd.DataFrame(
        [
            dict(
                name="feed-torch",
                phase="dataloader",
                variant="torch",
                dataset="",
                storage="object-store",
                key="accel_rate",
                best="210",
                settings="",
            ),
            dict(
                name="feed-far",
                phase="dataloader",
                variant="torch",
                dataset="",
                storage="far",
                key="accel_rate",
                best="900",
                settings="",
            ),
            dict(
                name="streams",
                phase="stream",
                variant="threads",
                dataset="",
                storage="",
                key="streams",
                best="4",
                settings="",
            ),
        ]
    )
    row = _row(project(t, [ONE_K], storage=STORE, searches=searches))
    assert row["measured_sustained_images_per_s"] == 210 and row["sustained_share"] == 0.21
    assert row["sustained_search"] == "feed-torch"
    assert math.isnan(_row(project(t, [ONE_K], storage=STORE))["sustained_share"])
    limited = _trials(
        {("torch", 2): (100.0, 0.01, 110_000)}, page_cache="limited", steady_images_per_s=80.0
    )
    lim = _row(project(limited, [ONE_K], storage=STORE))
    assert lim["steady_images_per_s"] == 80 and lim["steady_share"] == pytest.approx(0.08)
    assert "| 210 images/s, 21% of one |" in accelerators_markdown(
        project(t, [ONE_K], storage=STORE, searches=searches)
    )


def _opening(t: pd.DataFrame, searches=None) -> list[str]:
    t = flag_interference(t, 0.1)
    rec = recommend(t, summarize(t))
    return sentences(rec, project(t, [ONE_K], storage=STORE), searches), rec


def test_the_first_screen_says_the_runs_numbers_and_changes_with_a_record():
    t = _trials({("torch", 2): (100.0, 0.01, 110_000)}, **PROBED)
    (line,), rec = _opening(t)
    assert line.startswith(
        "Training from object-store (cold page cache, batch_size=32): use torch x2"
    )
    assert "about 10 cores like these" in line and "20 requests in flight" in line
    assert (
        "this machine feeds 10% of one" in line
        and "first to bind: cores (x5 what it ran with)" in line
    )
    md = markdown(rec, opening=[line])
    assert md.splitlines()[2] == line  # the page opens with it, before the table
    # a record changed: twice the rate at half the CPU, a 40 ms latency
    faster = t.copy()
    faster.loc[0, ["images_per_s", "probe_latency_ms"]] = [200.0, 40.0]
    faster.loc[0, "own_cpu_seconds"] = 64 * 0.005
    faster = pd.concat([faster.iloc[[0]]] * 3, ignore_index=True).assign(repetition=[0, 1, 2])
    (changed,), _ = _opening(faster)
    assert "about 5 cores like these" in changed and "40 requests in flight" in changed
    assert "feeds 20% of one" in changed
    bigger = t.assign(bytes=64 * 250_000)
    (short,), _ = _opening(bigger)
    assert "the storage allows 125 of the 250 MB/s one needs" in short


def test_the_streaming_sentence_comes_from_the_stream_search_where_one_ran():
    t = _trials({("torch", 2): (100.0, 0.01, 110_000)}, **PROBED)
    searches = pd.DataFrame(
        [
            dict(
                name="s",
                phase="stream",
                variant="threads",
                workers="2",
                dataset="",
                storage="",
                key="streams",
                best="6",
                settings="fps=30",
            )
        ]
    )
    lines, _ = _opening(t, searches)
    assert len(lines) == 2 and "sustains 6 concurrent streams" in lines[1]
