"""The DataLoader phase's figure of the libraries side by side: each pipeline (the project's
own ``torch`` and the peers users run) at its best setting, images/s and CPU per image, cold
and warm page cache, a column per storage profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from imgread.answer.figures.common import empty, machine_label, rows, subplots
from imgread.answer.figures.datasets import every_dataset

CACHE_COLOURS = {"cold": "#4477aa", "warm": "#ee6677"}


def best_cells(d: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, storage, page_cache, variant), at the largest n: the cell (workers and
    settings) with the best median images/s, with its median CPU ms per image."""
    d = d.assign(cpu_ms=d["own_cpu_seconds"] * 1e3 / d["images"].clip(lower=1))
    d = d.assign(where=d["dataset"].astype(str) + ", " + d["storage"].astype(str)).copy()
    d = d[d["n_images"] == d.groupby(["where", "page_cache"])["n_images"].transform("max")]
    keys = [c for c in ("variant", "workers", "decoder", "source", "shard_mb", "batch_size")]
    keys += [c for c in ("pin_memory", "ratio", "client") if c in d]
    cells = (
        d.groupby(["where", "page_cache", *keys], dropna=False)
        .agg(rate=("images_per_s", "median"), cpu_ms=("cpu_ms", "median"), reps=("seconds", "size"))
        .reset_index()
    )
    top = cells.groupby(["where", "page_cache", "variant"])["rate"].transform("max")
    return cells[cells["rate"] == top].drop_duplicates(["where", "page_cache", "variant"])


def _bars(ax, cells: pd.DataFrame, libraries: list[str], column: str) -> None:
    width = 0.8 / max(len(CACHE_COLOURS), 1)
    for k, (cache, colour) in enumerate(CACHE_COLOURS.items()):
        c = cells[cells["page_cache"] == cache].set_index("variant").reindex(libraries)
        xs = np.arange(len(libraries)) + (k - 0.5) * width
        ax.bar(xs, c[column].to_numpy(dtype=float), width, color=colour, label=cache)
        if column == "rate":
            for x, (v, w) in zip(xs, zip(c["rate"], c["workers"], strict=True), strict=True):
                if not np.isnan(v):  # the best cell's workers, above its bar
                    ax.annotate(f"x{int(w)}", (x, v), ha="center", va="bottom", fontsize=7)
    if column == "rate":  # a library with no bar here says why it has none
        for x, lib in enumerate(libraries):
            if lib not in set(cells["variant"]):
                ax.annotate(
                    "not measured",
                    (x, 0),
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=7,
                    color="0.4",
                )
    ax.set_xticks(np.arange(len(libraries)), libraries, rotation=30, ha="right", fontsize=8)


@every_dataset
def dataloader_libraries(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Images/s (top) and CPU ms per image (bottom) of every pipeline at its best setting,
    bars cold and warm, a column per dataset and storage profile; a library not measured there
    has no bar (torchvision-imagefolder reads folders: local only)."""
    d = rows(trials, phase, storage=None)
    if d.empty or d["variant"].nunique() < 2:
        what = (
            "no DataLoader trials" if d.empty else f"no DataLoader trials but {d['variant'][0]}'s"
        )
        return empty(
            (7, 4.5),
            f"{what[0].upper()}{what[1:]} in this study: add the peers\n"
            "(torchvision-imagefolder, torchvision-io, tf-data, dali-cpu, litdata)\n"
            "beside torch to a dataloader block (config.yaml's imagenet-like)",
        )
    cells = best_cells(d)
    libraries = [v for v in phase.variants if v in set(cells["variant"])]
    profiles = list(dict.fromkeys(cells["where"]))
    fig, axes = subplots(
        2, len(profiles), figsize=(1.2 + 0.75 * len(libraries) * len(profiles), 6.5), squeeze=False
    )
    for j, name in enumerate(profiles):
        g = cells[cells["where"] == name]
        _bars(axes[0, j], g, libraries, "rate")
        _bars(axes[1, j], g, libraries, "cpu_ms")
        axes[0, j].set(title=f"dataset {name.replace(', ', ', storage ')}")
        axes[0, j].set(ylabel="images/s (best setting)")
        axes[1, j].set(ylabel="CPU ms per image (process tree)")
        axes[0, j].set_ylim(0, float(cells["rate"].max()) * 1.2)
        axes[0, j].legend(title="page cache", fontsize="x-small")
    fig.suptitle(
        "DataLoader libraries side by side, each at its best setting (x<N>: its workers)\n"
        f"{machine_label(trials)}",
        y=1.02,
    )
    fig.tight_layout()
    return fig
