"""What a set of results measured, read from the records themselves (trials, the manifest
and dataset.json of the dataset the trials read), never from the config a report is built
with: the captions, titles and table notes are written from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from imgread.answer import snippets
from imgread.answer.keys import CELL
from imgread.answer.text import (
    dataset_line,
    device_line,
    footer,
    how_to_read,
    machine_line,
    not_measured,
    repetitions_line,
    rst,
)
from imgread.dataset.folder import encoding_label
from imgread.dataset.manifest import read_manifest
from imgread.phases.registry import PHASES
from imgread.plan.storage import skipped_storage
from imgread.util import write_text_atomic


def describe(
    trials: pd.DataFrame,
    manifest: str | os.PathLike,
    device: dict | None = None,
    config: dict | None = None,
    manifests: list | None = None,
) -> dict:
    """The study the trials are: dataset (the study's: ``manifest``) and every dataset the
    trials read (``manifests``, the study's first), sizes, repetitions, machines, phases,
    dates."""
    reps = trials.groupby([c for c in CELL if c in trials], dropna=False).size()
    machines = (
        trials[["hostname", "cpu_model", "logical_cores", "physical_cores"]]
        .drop_duplicates()
        .to_dict("records")
    )
    ids = sorted(trials["dataset_id"].unique()) if "dataset_id" in trials else []
    cold = trials[trials["cache_state"] == "cold"]
    read = set(trials["dataset"]) if "dataset" in trials else set()
    every = [_dataset(m) for m in (manifests or [manifest])]
    every = [d for i, d in enumerate(every) if i == 0 or d["name"] in read]
    return dict(
        dataset=_dataset(manifest),
        datasets=every,
        trials=int(len(trials)),
        trial_dataset_ids=ids,
        phases=sorted(trials["phase"].unique()),
        sizes={
            p: sorted(int(n) for n in g["n_images"].unique()) for p, g in trials.groupby("phase")
        },
        repetitions=dict(min=int(reps.min()), max=int(reps.max())),
        machines=machines,
        started=str(trials["started_at"].min()),
        finished=str(trials["finished_at"].max()),
        device=(
            {k: device[k] for k in ("method", "fio_version", "device_mb_per_s", "best_jobs")}
            if device
            else None
        ),
        cold_cache=dict(
            trials=int(len(cold)),
            methods=sorted(cold["cache_method"].unique()),
            max_resident_fraction=float(cold["max_resident_fraction"].max()) if len(cold) else None,
            worst_resident_fraction=(
                float(cold["resident_fraction_before"].max()) if len(cold) else None
            ),
        ),
        interfered_trials=int(trials["interfered"].sum()) if "interfered" in trials else 0,
        config_digest=config_digest(config) if config is not None else None,
        # storage profiles the config asked for that this machine could not emulate
        storage_skipped=list(skipped_storage(config).values()) if config is not None else [],
        # each profile's kind, for the code to paste (an object store's client, or files)
        storage_kinds={p["name"]: p["kind"] for p in (config or {}).get("storage") or []},
    )


def _dataset(manifest: str | os.PathLike) -> dict:
    """The dataset the manifest lists: name, id, kind, count, pixel sizes, mean file size."""
    m = read_manifest(manifest)
    root = Path(manifest).parent
    info_path = root / "dataset.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    widths = sorted({e.width for e in m.entries})
    heights = sorted({e.height for e in m.entries})
    sizes = np.array([e.bytes for e in m.entries], dtype=float)
    return dict(
        name=root.name,
        id=m.dataset_id,
        kind=info.get("kind", "unknown"),
        source=info.get("source"),
        count=len(m.entries),
        width=widths[0] if len(widths) == 1 else f"{widths[0]}-{widths[-1]}",
        height=heights[0] if len(heights) == 1 else f"{heights[0]}-{heights[-1]}",
        mean_mb=float(sizes.mean() / 1e6),
        size_spread=info.get("size_spread", 0),
        encoding=encoding_label(info),
    )


def config_digest(config: dict) -> str:
    """A short fingerprint of a config (defaults filled in), as the workflow computes it."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render(template: str, study: dict, **fields) -> str:
    """A caption template (Python format fields) filled from the study: {footer},
    {footer_<phase>}, {dataset}, {repetitions}, {machine}, {device} and ``fields``."""
    values = dict(
        footer=footer(study),
        dataset=dataset_line(study),
        repetitions=repetitions_line(study),
        machine=machine_line(study),
        device=device_line(study),
        **{f"footer_{p}": footer(study, p) for p in PHASES},
        **fields,
    )
    return template.format(**values)


def cache_fields(study: dict) -> dict:
    """{cache_method}, {max_resident} and {worst_resident} for the cold-cache captions."""
    c = study["cold_cache"]
    if not c["trials"]:
        return dict(cache_method="(no cold trials)", max_resident="-", worst_resident="-")
    return dict(
        cache_method=", ".join(c["methods"]),
        max_resident=f"{c['max_resident_fraction']:.1%}",
        worst_resident=f"{c['worst_resident_fraction']:.2%}",
    )


def write_captions(
    templates: list[str],
    outs: list[str],
    study: dict,
    recommendation=None,
    tolerance=0.05,
    opening: list[str] | None = None,
    appendix: str = "",
) -> None:
    """Render each caption template (workflow/report/<name>.rst) to the output of the same
    name, filled from the study (and the recommendation, for the report's first page: the
    ``opening`` sentences in {first_screen}, ``appendix`` rst after the answer's table)."""
    by_name = {Path(o).stem: o for o in outs}
    fields = dict(
        cache_fields(study),
        first_screen="\n\n".join(opening or []).replace("*", "\\*"),
        recommendation=(
            rst(recommendation)
            + "".join(f"\n{line}\n" for line in not_measured(study))
            + (f"\n{appendix}" if appendix else "")
            # the code to paste last, as in recommendation.md: after the tables it configures
            + snippets.rst_blocks(recommendation, study.get("storage_kinds"))
            if recommendation is not None
            else ""
        ),
        how_to_read=how_to_read(tolerance),
        interfered=study["interfered_trials"],
    )
    for template in templates:
        out = by_name[Path(template).stem]
        write_text_atomic(out, render(Path(template).read_text(), study, **fields))
