"""The answer's code to paste, as the smoke run wrote it: every fenced python block of its
recommendation.md run in a fresh interpreter on the smoke dataset, its result checked (count,
shape, dtype, the first image's pixels: tests/support/snippets.py); the report's text holds
the same blocks.

Not collected on its own: tests/workflow/test_workflow.py imports the test, so that it reuses
that module's smoke run (one run of the workflow, not two)."""

from __future__ import annotations

import pandas as pd
import pytest

from ..support.snippets import blocks, check, run


@pytest.mark.workflow
def test_every_block_of_the_answer_runs_on_the_smoke_data(smoke_run, tmp_path):
    md = (smoke_run / "results/tables/recommendation.md").read_text()
    rec = pd.read_csv(smoke_run / "results/tables/recommendation.csv")
    found = blocks(md)
    assert len(found) == len(rec) > 0, "one block per answer row"
    report = (smoke_run / "results/report/workflow.rst").read_text()
    assert report.count(".. code-block:: python") == len(rec)
    for i, ((title, code), dataset) in enumerate(zip(found, rec["dataset"], strict=True)):
        images = smoke_run / "results/datasets" / dataset / "images"
        files = sorted(images.glob("*.*"))
        result = run(code, images, tmp_path / f"block{i}.npz", timeout=180)
        check(title, result, files)
