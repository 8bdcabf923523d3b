"""The claim "adding a phase is one module", its unit part: a phase written outside the package
(tests/support/plugin/toyphase.py, found through the ``imgread.phases`` entry point of a
dist-info beside it) is registered with its figure, and one that breaks the contract is refused.
The same phase through the real workflow: tests/workflow/test_plugin_phase_workflow.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imgread.errors import UserError
from imgread.phases.base import Phase, Variant
from imgread.phases.registry import check_phase, load_object

from ..support.helpers import ROOT, plugin_env

PLUGIN = ROOT / "tests" / "support" / "plugin"


def test_the_registry_finds_a_phase_through_its_entry_point():
    code = "from imgread.phases.registry import PHASES, FIGURES; print(list(PHASES), list(FIGURES))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **plugin_env(PLUGIN)},
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
