"""The load phase's figures: load time per n, and the page-cache state before each trial."""

from __future__ import annotations

import seaborn as sns
from matplotlib.figure import Figure

from imgread.figures.common import device_label, label, machine_label, rows, subplots


def load_time(trials, summary, speed, published, settings, phase, device=None, **_) -> Figure:
    """Cold-cache load time per n by variant, with 95 % CIs over repetitions."""
    df = rows(trials, phase).assign(label=label)
    fig, ax = subplots(figsize=(7, 4.5))
    sns.lineplot(
        data=df, x="n_images", y="seconds", hue="label", marker="o", errorbar=("ci", 95), ax=ax
    )
    if device and not df.empty:
        per_n = df.groupby("n_images")["bytes"].median().sort_index()
        ax.plot(
            per_n.index,
            per_n.to_numpy() / 1e6 / device["device_mb_per_s"],
            ls="--",
            c="black",
            label=device_label(device),
        )
    ax.set(
        xlabel="images read",
        ylabel="load time (s), cold page cache",
        title=f"Loading compressed bytes\n{machine_label(trials)}",
    )
    ax.legend(title="variant (workers)", fontsize="small")
    return fig


def residency(trials, summary, speed, published, settings, **_) -> Figure:
    """Fraction of the images' pages resident before each trial, by phase and cache method."""
    df = trials.assign(
        resident=trials["resident_fraction_before"].astype(float),
        method=trials["phase"] + ": " + trials["cache_method"],
    )
    fig, ax = subplots(figsize=(7, 4.5))
    sns.stripplot(
        data=df, x="method", y="resident", hue="cache_state", jitter=0.25, alpha=0.7, ax=ax
    )
    limit = float(trials["max_resident_fraction"].max())
    ax.axhline(limit, ls="--", c="red", label=f"cold limit ({limit:g})")
    ax.set(
        ylim=(-0.05, 1.05),
        xlabel="phase: cache preparation",
        ylabel="fraction of pages resident before timing",
        title=f"Page-cache state before each trial (mincore)\n{machine_label(trials)}",
    )
    ax.legend(fontsize="small")
    return fig
