"""The device ceiling's workflow rule runs with fio on PATH and without it (then the O_DIRECT
reader measures). The ceiling itself: tests/instruments/test_ceiling.py."""

from __future__ import annotations

import json
import shutil

import pytest

from ..support.helpers import copy_project, path_without, snakemake

HAVE_FIO = shutil.which("fio") is not None


@pytest.mark.workflow
def test_the_ceiling_rule_runs_with_and_without_fio(tmp_path):
    work = copy_project(tmp_path / "imgread")
    target = "results/datasets/smoke/device_ceiling.json"
    args = (target, "--cores", "1", "--configfile", "config/smoke.yaml")
    if HAVE_FIO:
        snakemake(work, *args)
        assert json.loads((work / target).read_text())["method"] == "fio"
    snakemake(
        work, *args, "--forcerun", "device_ceiling", env={"PATH": path_without(tmp_path, "fio")}
    )
    result = json.loads((work / target).read_text())
    assert result["method"] == "odirect" and result["device_mb_per_s"] > 0
