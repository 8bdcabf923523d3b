"""The claim "adding a DataLoader pipeline is one module": a pipeline written outside the
package (the toy below: a plain loop in the trial's process, written into a temporary folder
beside a dist-info with its ``imgread.pipelines`` entry point, what ``pip install`` writes) is
a variant of the DataLoader phase, runs a real trial checked after the clock by count, label
and pixels, and one that breaks the contract or delivers the wrong pixels is refused, named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ...support.helpers import install_plugin

TOY = '''
"""A pipeline from outside imgread: one batch at a time in the trial's own process."""

import numpy as np

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import get_decoder
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.trial.pools import Runner


class ToyRunner(Runner):
    swap = False  # BGR: what the check must refuse

    def __init__(self, ctx):
        self.ctx, self.batch = ctx, int(ctx.params["batch_size"])
        self.labels = class_labels(ctx.manifest)[: len(ctx.jobs)]
        self.pillow = get_decoder("pillow")
        self.run(ctx.jobs[:1])  # the warm-up: the decoder imported before the clock

    def run(self, jobs):
        out = []
        for i in range(0, len(jobs), self.batch):
            keys = list(range(i, min(i + self.batch, len(jobs))))
            crops = [self.pillow.decode(jobs[k].path, "crop224") for k in keys]
            if self.swap:
                crops = [c[:, :, ::-1] for c in crops]
            x = np.stack([(c.astype(np.float32) / 255 - 0.5) / 0.5 for c in crops])
            out.append((x.transpose(0, 3, 1, 2), self.labels[keys], np.array(keys)))
        return out

    def fields(self):
        return {"toy_batches": -(-len(self.ctx.jobs) // self.batch)}


class BgrRunner(ToyRunner):
    swap = True


TOY = Pipeline("toy", "a loop in the trial's process", "toypipeline:ToyRunner")
BGR = Pipeline("bgr", "channels swapped", "toypipeline:BgrRunner")
NO_START = Pipeline("nostart", "", "toypipeline")
'''


def _plugin(root: Path, *entry_points: str) -> Path:
    return install_plugin(root, "toypipeline", TOY, "imgread.pipelines", *entry_points)


def _trial(plugin: Path, manifest: Path, out: Path, variant: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = ["trial", "--manifest", str(manifest), "--phase", "dataloader", "--variant", variant]
    args += ["--n", "6", "--workers", "0", "--batch-size", "4", "--out", str(out)]
    code = f"import sys\nfrom imgread.cli.main import main\nsys.exit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_pipeline_from_outside_runs_a_checked_trial(small_dataset, tmp_path):
    plugin = _plugin(tmp_path / "plugin", "toy = toypipeline:TOY")
    out = tmp_path / "rec.json"
    r = _trial(plugin, small_dataset, out, "toy")
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert (rec["variant"], rec["images"], rec["samples_unique"]) == ("toy", 6, 6)
    assert rec["toy_batches"] == 2
    assert rec["pixel_mae_max"] < 0.01  # the reference's own decode, normalised and back
    assert rec["seconds"] > 0 and rec["startup_seconds"] > 0


def test_a_pipeline_that_swaps_channels_fails_its_trial(small_dataset, tmp_path):
    plugin = _plugin(tmp_path / "plugin", "bgr = toypipeline:BGR")
    r = _trial(plugin, small_dataset, tmp_path / "rec.json", "bgr")
    assert r.returncode != 0
    assert "bgr: sample 0" in r.stderr and "differs from the reference pillow crop" in r.stderr
    assert not (tmp_path / "rec.json").exists()


def test_a_broken_pipeline_is_refused_naming_it(tmp_path):
    plugin = _plugin(tmp_path / "plugin", "nostart = toypipeline:NO_START")
    code = "from imgread.phases.dataloader.pipelines import registry; registry.pipelines()"
    path = os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        "RuntimeError: pipeline toypipeline:NO_START (entry point nostart of group "
        "imgread.pipelines) breaks the pipeline contract: no description (one line: the "
        "library and how it loads); start 'toypipeline' is not 'module:callable'"
    )
