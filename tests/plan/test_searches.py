"""A config's searches: checked in one line naming the search and the field, planned into a
cell whose inputs a trial's input functions give; the search run on a fake trial whose
capacity is known (the highest value measured to pass, the probes counted and written)."""

from __future__ import annotations

import math

import pytest

from imgread.errors import UserError
from imgread.phases.dataloader.pipelines.consumer import ACCEL_SEARCH
from imgread.plan.searches import searches
from imgread.trial.search_run import COLUMNS, probe_values, run_search, search_row

from ..support.helpers import check_like_the_workflow, smoke_config

SEARCH = {
    "name": "feed-x",
    "phase": "dataloader",
    "variant": "torch",
    "n": 8,
    "workers": 1,
    "params": {"decoder": "simplejpeg", "batch_size": 2},
    "key": "accel_rate",
}


def _config(**change):
    config = smoke_config({"searches": [{**SEARCH, **change}]})
    check_like_the_workflow(config)
    return config


def test_the_smoke_search_is_planned_with_its_cell():
    (s,) = searches(_config())
    assert (s.name, s.dataset, s.storage, s.max_probes) == ("feed-x", "smoke", "local", 6)
    assert s.settings == "decoder=simplejpeg, batch_size=2"
    cell = dict(s.cell().params)
    assert cell["decoder"] == "simplejpeg" and "accel_rate" not in cell
    assert s.probe_params("120")["accel_rate"] == "120"
    assert s.output() == "results/searches/feed-x.json"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"phase": "nope"}, "searches[0]' (feed-x).phase: unknown phase 'nope'"),
        ({"variant": "nope"}, "(feed-x).variant: dataloader has no variant 'nope'"),
        ({"key": "batch_size"}, "(feed-x).key: dataloader cannot search 'batch_size'"),
        ({"phase": "load", "variant": "sequential"}, "load cannot search 'accel_rate'"),
        ({"params": {"decoder": "nope"}}, "(feed-x).params: dataloader: unknown decoder"),
        ({"params": {"accel_rate": 10}}, "(feed-x).params: accel_rate is the key searched"),
        ({"params": {"colour": "red"}}, "(feed-x).params: dataloader: unknown setting"),
        ({"dataset": "nope"}, "(feed-x).dataset: 'nope' is not one of"),
        ({"storage": "nope"}, "(feed-x).storage: 'nope' is not defined"),
        ({"n": 9}, "(feed-x).n: 9 images, but dataset smoke has 8"),
        (
            {"variant": "dali-cpu", "workers": 0, "params": {"batch_size": 2}},
            "(feed-x).workers: dataloader/dali-cpu takes at least 1, not 0",
        ),
    ],
)
def test_a_bad_search_is_one_line_naming_the_search_and_field(change, words):
    config = smoke_config({"searches": [{**SEARCH, **change}]})
    check_like_the_workflow(config)
    with pytest.raises(UserError) as err:
        searches(config)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_schema_refuses_a_bad_name_or_budget():
    for change in ({"name": "Feed X"}, {"max_probes": 1}, {"n": 0}):
        with pytest.raises(UserError, match="searches"):
            _config(**change)


def test_two_searches_of_one_name_are_refused():
    config = smoke_config({"searches": [SEARCH, SEARCH]})
    check_like_the_workflow(config)
    with pytest.raises(UserError, match=r"searches\[1\]' \(feed-x\)\.name: 'feed-x' is used twice"):
        searches(config)


def _pipeline(r0: float):
    """A trial whose pipeline loads in the training process at r0 images/s: AU at rate r is
    r0 / (r0 + r), so AU >= 0.9 holds up to r0 / 9."""
    calls = []

    def trial(value, k):
        calls.append((value, k))
        au = math.nan if value == 0 else r0 / (r0 + value)
        return {"images_per_s": r0 if value == 0 else 1 / (1 / r0 + 1 / value), "au": au}

    return trial, calls


def test_the_search_finds_the_highest_measured_pass_within_its_budget():
    trial, calls = _pipeline(900.0)
    lines = []
    out = run_search(
        ACCEL_SEARCH, 8, trial, to_value=lambda v: float(round(v)), log=lines.append, label="s"
    )
    assert [k for _, k in calls] == list(range(1, len(calls) + 1)) and len(calls) <= 8
    # halved from above, geometrically: the costly bottom (r0 / 32) is not asked first
    assert calls[0][0] == 0 and calls[1][0] == 900 and calls[2][0] == round((900 / 32 * 900) ** 0.5)
    assert out["best"] <= 100 and out["best"] >= 100 / 1.3  # r0 / 9 = 100: never above it
    assert out["metric_at_best"] >= 0.9 and out["probes"] == len(calls)
    assert lines[0] == "s probe 1/8: accel_rate=0 -> 900 images/s unloaded"
    assert lines[1] == "s probe 2/8: accel_rate=900 -> AU 0.5, fail"
    row = search_row({**out, "name": "s"})
    assert list(row) == COLUMNS and row["best"] == str(int(out["best"]))
    assert row["probe_values"].startswith("900:false:0.5;159:false:0.8499;")
    assert not probe_values(out).startswith("0:")  # the unloaded trial is no probe


def test_a_search_whose_lowest_probe_fails_has_no_best():
    def trial(value, k):
        return {"images_per_s": 64.0, "au": math.nan if value == 0 else 0.5}

    out = run_search(ACCEL_SEARCH, 6, trial, log=lambda line: None)
    assert out["best"] is None and out["probes"] == 6 and out["exhausted"]
    assert search_row({**out, "name": "s"})["best"] == ""
