"""Figures of a study, drawn with seaborn from the tidy tables; each saved as PNG and SVG.

Each phase declares its figures (``Phase.figures``: name -> "module:function"); :func:`draw`
finds the phase that owns a figure in the registry and calls its function as
``function(trials, summary, speed, published, settings, phase=..., caches=..., frames=...,
scaling=..., device=...)``. The built-in figures are bare matplotlib Figures, not pyplot's, so
they need no backend and render headless.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import seaborn as sns

from imgread.answer.figures.common import save
from imgread.errors import UserError
from imgread.phases.registry import FIGURES, load_object

__all__ = ["draw"]


def _of_dataset(table: pd.DataFrame | None, name: str) -> pd.DataFrame | None:
    if table is None or "dataset" not in table:
        return table
    return table[table["dataset"] == name]


def draw(
    name: str,
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    speed: pd.DataFrame,
    published: pd.DataFrame,
    out_stem: str | os.PathLike,
    settings: dict,
    caches: pd.DataFrame | None = None,
    frames: pd.DataFrame | None = None,
    scaling: pd.DataFrame | None = None,
    device: dict | None = None,
) -> list[Path]:
    """Draw figure ``name`` (its phase's ``figures[name]``) as ``out_stem``.png and .svg.

    A figure is drawn from the study's dataset's rows (``settings["study_dataset"]``) unless
    its function compares datasets (``every_dataset = True`` on the function)."""
    try:
        phase = FIGURES[name]
    except KeyError:
        raise UserError(f"unknown figure {name!r}; choose one of {', '.join(FIGURES)}") from None
    sns.set_theme(
        style=settings.get("style", "whitegrid"), context=settings.get("context", "paper")
    )
    function = load_object(phase.figures[name])
    study_dataset = settings.get("study_dataset")
    if study_dataset and not getattr(function, "every_dataset", False):
        trials, summary, speed, frames, scaling = (
            _of_dataset(t, study_dataset) for t in (trials, summary, speed, frames, scaling)
        )
    fig = function(
        trials,
        summary,
        speed,
        published,
        settings,
        phase=phase,
        caches=caches,
        frames=frames,
        scaling=scaling,
        device=device,
    )
    return save(fig, Path(out_stem), int(settings.get("dpi", 150)))
