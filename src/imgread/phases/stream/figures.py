"""The stream phase's figures: the latency CDF at one load, p99 latency vs offered fps, and
how busy the producers keep the model (AU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from imgread.answer.figures.common import (
    cores,
    empty,
    log2_workers,
    machine_label,
    plain,
    rows,
    subplots,
)

PRODUCERS = ("sequential", "processes", "threads", "thread-per-frame", "asyncio")


def _ints(d: pd.DataFrame) -> pd.DataFrame:
    """The rows with fps and compute_ms as whole numbers."""
    d = d.copy()
    for col in ("fps", "compute_ms"):
        if col in d:
            d[col] = d[col].astype(int)
    return d


def _producer_colours():
    return dict(zip(PRODUCERS, sns.color_palette("tab10", len(PRODUCERS)), strict=True))


def _models(d: pd.DataFrame) -> list[tuple[int, str]]:
    """(compute_ms, compute) of every emulated model measured."""
    return sorted({(int(m), k) for m, k in zip(d["compute_ms"], d["compute"], strict=True)})


def _cdf(ax, g: pd.DataFrame, fps: int, title: str) -> None:
    """One latency CDF per (producer, workers), with the deadline of one frame interval."""
    colours = _producer_colours()
    for (variant, workers), h in g.groupby(["variant", "workers"]):
        lat = np.sort(h["latency_ms"].to_numpy())
        ax.plot(
            lat,
            np.arange(1, len(lat) + 1) / len(lat),
            c=colours.get(variant),
            ls="-" if workers <= 2 else "--",
            label=f"{variant} ({workers})",
        )
    if fps:
        ax.axvline(1e3 / fps, ls=":", c="black", label=f"deadline {1e3 / fps:.0f} ms")
    ax.set(
        xscale="log",
        xlabel="latency, arrival to model done (ms, log)",
        ylabel="fraction of frames",
        title=title,
    )
    plain(ax, "x")
    ax.legend(title="producer (workers)", fontsize="x-small", ncols=2)


def stream_latency_cdf(
    trials, summary, speed, published, settings, phase, frames=None, **_
) -> Figure:
    """Latency CDF per producer at one load: the highest offered fps with the longest model."""
    d = _ints(rows(trials, phase))
    if d.empty or frames is None or frames.empty:
        return empty((7, 4), "no stream trials in this study")
    f = _ints(rows(frames, phase))
    rated = d[d["fps"] > 0]
    pick = rated if not rated.empty else d
    fps = int(pick["fps"].max())
    cms = int(pick[pick["fps"] == fps]["compute_ms"].max())
    kinds = sorted(set(pick[(pick["fps"] == fps) & (pick["compute_ms"] == cms)]["compute"]))
    fig, axes = subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.8), squeeze=False)
    warm = int(d["warmup_frames"].max())
    for ax, kind in zip(axes[0], kinds, strict=True):
        g = f[(f["fps"] == fps) & (f["compute_ms"] == cms) & (f["compute"] == kind)]
        _cdf(ax, g[g["frame"] >= warm], fps, f"model: {cms} ms {kind}")
    fig.suptitle(
        f"Stream latency at {fps} fps offered ({'all at once' if not fps else 'fixed rate'}); "
        f"first {warm} frames of each trial left out; dashed: more than 2 workers\n"
        f"{machine_label(trials)}"
    )
    fig.tight_layout()
    return fig


def _p99(ax, g: pd.DataFrame, title: str) -> None:
    """p99 latency vs fps of each producer at its best worker count (lowest mean p99)."""
    colours = _producer_colours()
    med = g.groupby(["variant", "workers", "fps"])["latency_p99_ms"].median().reset_index()
    for variant, h in med.groupby("variant"):
        best_w = h.groupby("workers")["latency_p99_ms"].mean().idxmin()
        line = h[h["workers"] == best_w].sort_values("fps")
        ax.plot(
            line["fps"],
            line["latency_p99_ms"],
            "o-",
            c=colours.get(variant),
            label=f"{variant} ({best_w})",
        )
    xs = sorted(g["fps"].unique())
    # a marker too: with one offered rate the dotted line alone would draw nothing
    ax.plot(
        xs, [1e3 / x for x in xs], ls=":", c="black", marker="_", ms=24, label="one frame interval"
    )
    ax.set_xticks(xs)
    ax.set(yscale="log", xlabel="offered fps", ylabel="p99 latency (ms, log)", title=title)
    plain(ax, "y")
    ax.legend(title="producer (best workers)", fontsize="x-small")


def stream_p99(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """p99 latency vs offered fps, per producer at its best worker count, per model."""
    d = _ints(rows(trials, phase))
    d = d[d["fps"] > 0]
    if d.empty:
        return empty((7, 4), "no stream trials at a fixed rate in this study")
    models = _models(d)
    fig, axes = subplots(1, len(models), figsize=(5.5 * len(models), 4.8), squeeze=False)
    for ax, (cms, kind) in zip(axes[0], models, strict=True):
        g = d[(d["compute_ms"] == cms) & (d["compute"] == kind)]
        _p99(ax, g, f"model: {cms} ms {kind}")
    fig.suptitle(f"99th percentile latency vs offered load\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def stream_au(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Consumer utilisation (AU) vs workers per producer and model, all frames at once."""
    d = _ints(rows(trials, phase))
    d = d[(d["fps"] == 0) & (d["compute_ms"] > 0)]
    if d.empty:
        return empty((7, 4), "no stream trials with a model and every frame at once")
    models = _models(d)
    fig, axes = subplots(
        1, len(models), figsize=(5.5 * len(models), 4.8), sharey=True, squeeze=False
    )
    colours = _producer_colours()
    n_cores = cores(trials)
    for ax, (cms, kind) in zip(axes[0], models, strict=True):
        g = d[(d["compute_ms"] == cms) & (d["compute"] == kind)]
        med = g.groupby(["variant", "workers"])["au"].median().reset_index()
        for variant, h in med.groupby("variant"):
            ax.plot(h["workers"], h["au"], "o-", c=colours.get(variant), label=variant)
        ax.axhline(0.9, ls="--", c="red", label="AU 0.90 (DLIO's pass mark)")
        ax.axvline(n_cores, ls=":", c="black", label=f"{n_cores} physical cores")
        log2_workers(ax, sorted(g["workers"].unique()), scale="log")
        ax.set(
            ylim=(0, 1.05),
            xlabel="workers",
            ylabel="AU = model time / wall time",
            title=f"model: {cms} ms {kind}",
        )
        ax.legend(fontsize="x-small")
    fig.suptitle(
        "How busy the producers keep the model, every frame available at once\n"
        f"{machine_label(trials)}"
    )
    fig.tight_layout()
    return fig
