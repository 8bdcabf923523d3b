"""The claim "adding a phase is one module": a phase written outside the package (tests/plugin/
toyphase.py, found through the ``imgread.phases`` entry point of a dist-info beside it) runs
through the real workflow to rows of summary.csv and a figure, and no file of the package
knows its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imgread.errors import UserError
from imgread.phases.base import Phase, Variant
from imgread.phases.registry import check_phase, load_object

from .helpers import ROOT, copy_project, snakemake

PLUGIN = ROOT / "tests" / "plugin"


def _env(plugin_dir: Path) -> dict:
    path = os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


def test_the_registry_finds_a_phase_through_its_entry_point():
    code = "from imgread.phases.registry import PHASES, FIGURES; print(list(PHASES), list(FIGURES))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **_env(PLUGIN)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'load', 'decode', 'dataloader', 'stream', 'toy']" in out
    assert "'toy_rate'" in out


def test_a_phase_that_breaks_the_contract_is_refused_when_it_loads():
    class Broken(Phase):
        name = "broken"
        baseline = ("sequential", 1)
        variants = {"threads": Variant("threads", True, None, "")}
        job_keys = ("nothing",)

    with pytest.raises(RuntimeError) as err:
        check_phase(Broken(), "tests:Broken")
    text = str(err.value)
    assert "verify() is not implemented" in text
    assert "baseline variant 'sequential'" in text
    assert "job key 'nothing'" in text
    with pytest.raises(UserError, match="cannot load 'imgread.nothing:Phase'"):
        load_object("imgread.nothing:Phase")


def _toy_config(path: Path) -> Path:
    """Every built-in variant left out (workers []), the toy phase's two variants measured."""
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
        "analysis": {"bootstrap_resamples": 50},
        "figures": {"dpi": 60},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.workflow
def test_a_phase_from_outside_the_package_runs_through_the_workflow(tmp_path):
    work = copy_project(tmp_path / "project")
    config = _toy_config(tmp_path / "toy.yaml")
    env = _env(work / "tests" / "plugin")
    snakemake(work, "--cores", "2", "--configfile", str(config), env=env, timeout=900)

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
