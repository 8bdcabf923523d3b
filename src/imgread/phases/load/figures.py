"""The load phase's figures: load time per n, and the page-cache state before each trial."""

from __future__ import annotations

import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from imgread.answer.figures.common import (
    device_label,
    empty,
    label,
    machine_label,
    rows,
    subplots,
)
from imgread.answer.figures.datasets import (
    PACKING_COLORS,
    every_dataset,
    packing,
    panels,
    retried,
    shard_datasets,
)


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


@every_dataset
def load_shards(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Cold-read images/s of loose files and of each shard size, a panel per storage profile,
    a group of bars per reader (its best workers / in flight, median over repetitions)."""
    d = shard_datasets(rows(trials, phase, storage=None))
    if d.empty:
        return empty(
            (7, 4.5),
            "No load trials read shards: list a dataset's shards_mb and a load block's\n"
            "shard_mb: [0, N, ...] (config.yaml's imagenet-like)",
        )
    d = d.assign(packing=d["shard_mb"].astype(int))
    cell = ["storage", "variant", "workers", "in_flight", "packing"]
    med = d.groupby(cell)["images_per_s"].median().reset_index()
    best = med.loc[med.groupby(["storage", "variant", "packing"])["images_per_s"].idxmax()]
    profiles = list(dict.fromkeys(d["storage"]))
    packings = sorted(d["packing"].unique())
    fig, axes = panels(len(profiles))
    width = 0.8 / len(packings)
    for ax, name in zip(axes.flat, profiles, strict=False):
        g = best[best["storage"] == name]
        variants = list(dict.fromkeys(g["variant"]))
        for k, mb in enumerate(packings):
            h = g[g["packing"] == mb].set_index("variant")
            xs = [i + (k - (len(packings) - 1) / 2) * width for i in range(len(variants))]
            ys = [h["images_per_s"].get(v, float("nan")) for v in variants]
            ax.bar(xs, ys, width, label=packing(mb), color=PACKING_COLORS[k % 6])
        ax.set_xticks(range(len(variants)), variants)
        ax.set(
            title=name + retried(d[d["storage"] == name]), ylabel="images/s (cold, best workers)"
        )
    for ax in list(axes.flat)[len(profiles) :]:
        ax.set_visible(False)
    names = ", ".join(dict.fromkeys(d["dataset"]))
    fig.suptitle(
        f"Loose files or tar shards: reading {names} from each storage\n{machine_label(trials)}",
        y=1.03,
    )
    # one legend for every panel, below them (a panel's own would cover its bars)
    handles = [
        Patch(color=PACKING_COLORS[k % 6], label=packing(mb)) for k, mb in enumerate(packings)
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=len(handles), fontsize="small", frameon=False
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
