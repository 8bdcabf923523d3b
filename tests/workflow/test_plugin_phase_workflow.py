"""The claim "adding a phase is one module", end to end: a phase written outside the package
(tests/support/plugin/toyphase.py, found through the ``imgread.phases`` entry point of a
dist-info beside it) runs through the real workflow to rows of summary.csv and a figure, and no
file of the package knows its name. Its registration alone: tests/phases/test_plugin_phase.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..support.helpers import ROOT, copy_project, plugin_env, snakemake


def _toy_config(path: Path) -> Path:
    """Every built-in variant and search left out, the toy phase's two variants measured."""
    full = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    phases = {
        phase: {variant: {"workers": []} for variant in variants}
        for phase, variants in full["phases"].items()
    }
    phases["toy"] = {
        "sequential": {"workers": [1], "flavour": ["plain", "salted"]},
        "threads": {"workers": [1, 2, 4]},
    }
    config = {
        "dataset": {"name": "toy", "count": 8, "width": 320, "height": 240, "target_bytes": 50000},
        "sizes": [4, 8],
        "repetitions": 2,
        "phases": phases,
        "ceiling": {"jobs": [1], "repetitions": 1},
        "searches": [],  # config.yaml's run on its own 640-image and 1080p sets: minutes
        "analysis": {"bootstrap_resamples": 50},
        "figures": {"dpi": 60},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.workflow
def test_a_phase_from_outside_the_package_runs_through_the_workflow(tmp_path):
    work = copy_project(tmp_path / "project")
    config = _toy_config(tmp_path / "toy.yaml")
    env = plugin_env(work / "tests" / "support" / "plugin")
    # the tables and the toy's figure with its caption (the others would only be drawn)
    targets = ["results/tables/summary.csv", "results/figures/toy_rate.png"]
    snakemake(work, *targets, "--cores", "2", "--configfile", str(config), env=env, timeout=900)

    summary = pd.read_csv(work / "results/tables/summary.csv")
    toy = summary[summary["phase"] == "toy"]
    assert set(toy["variant"]) == {"sequential", "threads"}
    assert set(toy["flavour"]) == {"plain", "salted"}
    assert sorted(toy[toy["variant"] == "threads"]["workers"].unique()) == [1, 2, 4]
    assert (toy["median_images_per_s"] > 0).all()
    assert len(toy) == 2 * 2 + 3 * 2  # (flavours + workers) x sizes
    trials = pd.read_csv(work / "results/tables/trials.csv")
    assert (trials[trials["phase"] == "toy"]["images"] == trials["n_images"]).all()
    figure = work / "results/figures/toy_rate.png"
    assert figure.stat().st_size > 5000
    caption = (work / "results/report/toy_rate.rst").read_text()
    assert "a phase added from outside the package" in caption
    assert "toy" in caption  # the dataset line, written from the records

    # The package itself never learnt the phase's name.
    for source in (work / "src" / "imgread").rglob("*.py"):
        assert "toy" not in source.read_text(encoding="utf-8"), source
