"""What every figure shares: a phase's rows, figures made without pyplot (bare Figures need no
backend, so they render headless, with or without a DISPLAY), saving as PNG and SVG, the
labels, the USL curves and the log-axis numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from imgread.answer.scaling import usl
from imgread.phases.base import Phase


def rows(table: pd.DataFrame, phase: Phase, storage: str | None = "local") -> pd.DataFrame:
    """The rows of ``table`` that ``phase`` measured; for a phase that reads from a storage
    profile, only those read from ``storage`` (by default the study's, the files where they
    are: the other profiles are drawn side by side in imgread.answer.figures.storage; None: all)."""
    out = table[table["phase"] == phase.name]
    if storage is not None and phase.reads_storage and "storage" in out:
        out = out[out["storage"] == storage]
    return out


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    """(figure, axes) like pyplot.subplots, but a bare Figure that needs no backend."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def save(fig: Figure, stem: Path, dpi: int) -> list[Path]:
    """Write ``stem``.png and ``stem``.svg; the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        out.append(path)
    plt.close(fig)  # a figure drawn with pyplot (a plug-in's) is released too
    return out


def machine_label(trials: pd.DataFrame) -> str:
    """'CPU model, N logical cores' of the machine the trials ran on (several if mixed)."""
    pairs = trials[["cpu_model", "logical_cores"]].drop_duplicates()
    return "; ".join(f"{m}, {c} logical cores" for m, c in pairs.itertuples(index=False))


def device_label(device: dict) -> str:
    """'device ceiling 1291 MB/s (fio-3.33, 8 readers)'."""
    tool = device["fio_version"] if device["method"] == "fio" else "O_DIRECT reader"
    return (
        f"device ceiling {device['device_mb_per_s']:.0f} MB/s "
        f"({tool}, {device['best_jobs']} readers)"
    )


def label(df: pd.DataFrame) -> pd.Series:
    """'variant (workers)' of each row, ' on machine' added where several machines ran."""
    text = df["variant"] + df["workers"].map(lambda w: f" ({w})")
    if "machine" in df and df["machine"].nunique() > 1:  # machines side by side
        text = text + " on " + df["machine"].astype(str)
    return text


def cores(trials: pd.DataFrame) -> int:
    """The physical cores of the machine (its logical cores where those were not recorded)."""
    col = "physical_cores" if "physical_cores" in trials else "logical_cores"
    return int(trials[col].max())


def usl_curves(ax, scaling, phase_rows, palette, hue, xs, scale=None) -> None:
    """Draw each curve's USL fit (dotted, in its line's colour) where it was fitted."""
    if scaling is None or scaling.empty:
        return
    fits = phase_rows.merge(scaling, how="inner")
    fits = fits[fits["status"] == "ok"]
    grid = np.linspace(min(xs), max(xs), 100)
    for i, (_, f) in enumerate(fits.iterrows()):
        y = usl(grid, f["a"], f["b"])
        ax.plot(
            grid,
            y if scale is None else y * scale(f),
            ls=":",
            lw=1.2,
            c=palette[f[hue]],
            label="USL fit" if i == 0 else None,
        )


def _minor(v, _):  # 20, 50, 200, 500: enough labels when the data spans one decade
    return f"{v:g}" if f"{v:.0e}"[0] in "25" else ""


def plain(ax, *axes: str) -> None:
    """Plain numbers (20, 300) on log axes instead of 2x10^1."""
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(_minor))


def empty(fig_size, message) -> Figure:
    """A figure that says why there is nothing to draw."""
    fig, ax = subplots(figsize=fig_size)
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return fig


def log2_workers(ax, ticks, scale: str = "symlog") -> None:
    """A base-2 worker axis (symlog so that 0 workers shows) ticked at the measured counts."""
    if scale == "symlog":
        ax.set_xscale("symlog", base=2, linthresh=1)
    else:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(int(t)) for t in ticks])
