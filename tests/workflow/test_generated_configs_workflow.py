"""Bad configs, generated (tests/plan/test_generated_configs.py checks a hundred in this
process): a few, the smoke config with one field broken (workers out of range, an unknown key,
a reference to a dataset no one defined), each stop a real ``snakemake -n`` in one line naming
the field, before any job, never a traceback."""

from __future__ import annotations

import copy
import random
import re
import subprocess
import sys

import pytest
import yaml

from ..support.helpers import ROOT, copy_project

SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
UNKNOWN = "zz_not_a_key"  # as in tests/plan/test_generated_configs.py


def _dry_run_cases(count: int) -> list[tuple[str, dict, str]]:
    """``count`` overrides of the smoke config with one field broken, seeded."""
    rng = random.Random(29)
    cases = []
    while len(cases) < count:
        config = copy.deepcopy(SMOKE)
        phase, variants = rng.choice(sorted(config["phases"].items()))
        variant = rng.choice(sorted(variants))
        settings_ = variants[variant]
        block = settings_[0] if isinstance(settings_, list) else settings_
        kind = len(cases) % 3
        if kind == 0:
            block["workers"] = [rng.choice([0, -2])]
            word = "workers"
        elif kind == 1:
            block[UNKNOWN] = [1]
            word = UNKNOWN
        else:
            block["dataset"] = ["nope"]
            word = "nope"
        cases.append((f"{phase}.{variant}", config, word))
    return cases


@pytest.mark.workflow
@pytest.mark.parametrize("case", _dry_run_cases(3), ids=lambda c: c[0])
def test_generated_bad_configs_stop_a_real_dry_run_in_one_line(tmp_path, case):
    where, config, word = case
    project = copy_project(tmp_path / "imgread")
    (project / "broken.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "broken.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [line for line in out.splitlines() if re.search(r"config '|storage profile '", line)]
    assert lines and word in lines[0], out[-3000:]
    assert not (project / "results" / "datasets").exists()
