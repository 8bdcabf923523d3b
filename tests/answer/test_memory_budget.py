"""Memory in the results (imgread.instruments.memory's columns): the summary's medians, the memory
figure of
each phase, the answer's memory column and ``analysis.memory_budget``, which applies the usual
rule among the cells within the budget and says when that changed the answer, on hand-made
trials; and the budget's one-line config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from imgread.answer.analysis import flag_interference, summarize, with_all_keys
from imgread.answer.figures.draw import draw
from imgread.answer.recommend import markdown, recommend
from imgread.errors import UserError
from imgread.plan.schema import check_schema

from ..support.helpers import ROOT

# ---------------------------------------------------------------- summary, figure, answer


COMMON = dict(phase="decode", decoder="pillow", output="full", delivery="discard", n_images=100)
MACHINE = dict(physical_cores=4, logical_cores=4, cpu_model="test CPU", memory_method="cgroup-v1")
QUIET = dict(interference_fraction=0.0, steal_seconds=0.0, other_cpu_seconds=0.0)


def _trials(cells: dict[tuple[str, int], tuple[float, float]]) -> pd.DataFrame:
    """Decode trials: {(variant, workers): (megapixels/s, peak memory in bytes)}, 3 each."""
    rows = []
    for (variant, workers), (rate, memory) in cells.items():
        for r in range(3):
            peak = memory + r * 1e6
            rows.append(
                dict(
                    COMMON,
                    **MACHINE,
                    **QUIET,
                    variant=variant,
                    workers=workers,
                    repetition=r,
                    seconds=100.0 / rate,
                    startup_seconds=0.01,
                    total_seconds=100.0 / rate + 0.01,
                    megapixels_per_s=rate * (1 + 0.001 * r),
                    images_per_s=rate / 10,
                    mb_per_s=rate / 5,
                    peak_memory_bytes=peak,
                    memory_baseline_bytes=0.5e9,
                    memory_per_worker_bytes=(peak - 0.5e9) / workers,
                )
            )
    return flag_interference(with_all_keys(pd.DataFrame(rows)), 0.1)


CELLS = {
    ("sequential", 1): (100.0, 0.9e9),
    ("processes", 2): (190.0, 1.6e9),
    ("processes", 4): (300.0, 3.1e9),  # the best, and the answer without a budget
    ("threads", 4): (200.0, 1.2e9),
}


def test_the_summary_has_the_median_memory_of_each_cell():
    summary = summarize(_trials(CELLS))
    row = summary[(summary["variant"] == "processes") & (summary["workers"] == 4)].iloc[0]
    assert row["median_peak_memory_bytes"] == 3.1e9 + 1e6
    assert row["median_memory_per_worker_bytes"] == pytest.approx((3.1e9 + 1e6 - 0.5e9) / 4)
    old = summarize(_trials(CELLS).drop(columns=["peak_memory_bytes"]))  # before the meter
    assert np.isnan(old["median_peak_memory_bytes"]).all()


def _answer(trials, budget=None) -> pd.DataFrame:
    rec = recommend(trials, summarize(trials), memory_budget=budget)
    return rec[rec["phase"] == "decode"].iloc[0]


def test_a_memory_budget_that_excludes_the_best_cell_changes_the_answer():
    trials = _trials(CELLS)
    free = _answer(trials)
    assert (free["variant"], free["workers"]) == ("processes", 4)
    assert free["memory_bytes"] == 3.1e9 + 1e6 and not free["budget_changed_answer"]
    # within 2 GB the best is threads x4 (200); processes x2 (190) is within 5 % of it, fewer
    row = _answer(trials, 2_000_000_000)
    assert (row["variant"], row["workers"]) == ("processes", 2)
    assert (row["best_variant"], row["best_workers"]) == ("threads", 4)
    assert row["budget_changed_answer"] and row["memory_bytes"] <= 2e9
    assert row["without_budget"].startswith("processes x4")
    assert row["without_budget_memory_bytes"] == 3.1e9 + 1e6
    text = markdown(recommend(trials, summarize(trials), memory_budget=2_000_000_000))
    assert "1.6 GB, within the 2 GB budget; the best overall (processes x4" in text
    assert "needs 3.1 GB" in text


def test_a_budget_the_answer_fits_changes_nothing_and_one_nothing_fits_says_so():
    trials = _trials(CELLS)
    roomy = _answer(trials, 4_000_000_000)
    assert (roomy["variant"], roomy["workers"]) == ("processes", 4)
    assert not roomy["budget_changed_answer"]
    tight = recommend(trials, summarize(trials), memory_budget=500_000_000)
    assert (tight["variant"].iloc[0], tight["workers"].iloc[0]) == ("processes", 4)
    assert "over the 500 MB budget: no cell fits it" in markdown(tight)


def test_the_memory_figure_draws_each_strategy_or_says_there_is_none(tmp_path):
    tables = dict(summary=pd.DataFrame(), speed=pd.DataFrame(), published=pd.DataFrame())
    out = draw(
        "memory_decode", _trials(CELLS), **tables, out_stem=tmp_path / "m", settings={"dpi": 40}
    )
    assert all(p.stat().st_size > 1000 for p in out)
    old = _trials(CELLS).drop(columns=["peak_memory_bytes"])  # records from before the meter
    out = draw("memory_decode", old, **tables, out_stem=tmp_path / "e", settings={"dpi": 40})
    assert out[0].stat().st_size > 1000


# ---------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2GB", "'2GB' is not of type 'integer'"),
        (-1, "-1 is less than the minimum of 1"),
        (1.5, "1.5 is not of type 'integer'"),
        ("lots", "'lots' is not of type 'integer'"),
        (2_000_000_000, None),
    ],
)
def test_a_bad_memory_budget_is_one_line_naming_the_field(value, message):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["analysis"] = {"memory_budget": value}
    if message is None:  # bytes: accepted
        return check_schema(config, ROOT / "config" / "schema.yaml")
    with pytest.raises(UserError) as err:
        check_schema(config, ROOT / "config" / "schema.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("config 'analysis.memory_budget': ")
    assert message in text
