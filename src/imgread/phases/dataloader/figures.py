"""The DataLoader phase's figures: images/s and time to the first batch vs num_workers, and
whether a decoded cache pays for its build."""

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
from imgread.answer.figures.datasets import (
    PACKING_COLORS,
    every_dataset,
    packing,
    panels,
    shard_datasets,
)
from imgread.answer.scaling import usl
from imgread.phases.dataloader.phase import TUNING


def _loader(trials: pd.DataFrame, phase) -> pd.DataFrame:
    """The project's own DataLoader's trials (the libraries users run have their figure,
    dataloader_libraries), each with its line: decoder, source and tuning."""
    d = rows(trials, phase)
    d = d[d["variant"] == phase.baseline[0]].copy() if not d.empty else d.copy()
    if d.empty:
        return d
    d["line"] = d["decoder"] + ", " + d["source"] + _tuning(d)
    return d


def _tuning(d: pd.DataFrame) -> pd.Series | str:
    """', tuned/batch' (and '/pooled' where the batches reuse their buffers) after a line's
    decoder and source where its allocator, normalize and collate are not the defaults
    (default/item/fresh), so that before and after are lines of their own."""
    if "allocator" not in d or "normalize" not in d:
        return ""
    setting = d["allocator"].astype(str) + "/" + d["normalize"].astype(str)
    if "collate" in d:
        setting = setting + ("/" + d["collate"].astype(str)).mask(d["collate"] != "pooled", "")
    return (", " + setting).mask(setting == "default/item", "")


def _few_batches(d) -> str:
    few = d[d["batches_per_worker_min"] < 10]
    if few.empty:
        return "every worker got at least 10 batches"
    ws = ", ".join(str(int(w)) for w in sorted(few["workers"].unique()))
    return f"hollow markers: fewer than 10 batches per worker (num_workers {ws})"


def _loader_fit(phase, scaling, rows) -> tuple[float, float] | None:
    """(a, b) of the USL fit of a DataLoader line (None if it was not fitted)."""
    if scaling is None or scaling.empty or rows.empty:
        return None
    keys = ["phase", "variant", *(p.name for p in phase.params), "n_images"]
    cell = rows.iloc[0]
    mask = scaling["status"] == "ok"
    for k in keys:
        mask &= scaling[k].astype(str) == str(cell[k])
    fit = scaling[mask]
    return (float(fit["a"].iloc[0]), float(fit["b"].iloc[0])) if not fit.empty else None


def _line(ax, m: pd.DataFrame, colour, name: str) -> None:
    """A line of medians, its markers hollow where a worker got fewer than 10 batches."""
    xs = m.index.to_numpy()
    ax.plot(xs, m["y"], c=colour, label=name)
    for x, y, few in zip(xs, m["y"], m["few"], strict=True):
        ax.plot(x, y, "o", c=colour, mfc="white" if few < 10 else colour)


def _ideal(ax, m: pd.DataFrame, colour, n_cores: int, fit) -> None:
    """num_workers=1 x min(w, cores) (dashed) and the USL's speedup x that rate (dotted)."""
    xs = m.index.to_numpy()
    one = m["y"][1]
    ideal = [one * max(min(x, n_cores), 1) for x in xs]
    ax.plot(xs, ideal, ls="--", c=colour, lw=0.8, alpha=0.7)
    if fit is not None:
        grid = np.linspace(1, max(xs), 100)
        ax.plot(grid, one * usl(grid, *fit), ls=":", c=colour, lw=1.2)


def _panel(ax, g: pd.DataFrame, column: str, colours: dict, n_cores: int, fits=None) -> None:
    """The lines of one page-cache state; with ``fits`` (the phase and its scaling table),
    each line's ideal and USL fit too."""
    med = g.groupby(["line", "workers"]).agg(
        y=(column, "median"), few=("batches_per_worker_min", "min")
    )
    for line, colour in colours.items():
        if line not in med.index.get_level_values(0):
            continue
        m = med.loc[line].sort_index()
        _line(ax, m, colour, line)
        if fits is not None and 1 in m.index:
            _ideal(ax, m, colour, n_cores, _loader_fit(*fits, g[g["line"] == line]))
    ax.axvline(n_cores, ls=":", c="black", label=f"{n_cores} physical cores")
    log2_workers(ax, sorted(g["workers"].unique()))


def _loader_panels(trials, phase, column, ylabel, title, ideal, log=True, scaling=None) -> Figure:
    """One panel per page-cache state: a line per (decoder, source) vs num_workers."""
    d = _loader(trials, phase)
    if d.empty:
        return empty((7, 4), "no DataLoader trials in this study")
    states = [s for s in ("cold", "warm") if s in set(d["page_cache"])]
    fig, axes = subplots(
        1, len(states), figsize=(6.5 * len(states), 6.2), sharey=True, squeeze=False
    )
    lines = sorted(d["line"].unique())
    colours = dict(zip(lines, sns.color_palette("tab10", len(lines)), strict=True))
    n_cores = cores(trials)
    fits = (phase, scaling) if ideal else None
    for ax, state in zip(axes[0], states, strict=True):
        _panel(ax, d[d["page_cache"] == state], column, colours, n_cores, fits)
        ax.set(xlabel="num_workers", ylabel=ylabel, title=f"page cache {state}")
        if log:  # sources differ ~10x: a log axis keeps every line readable
            ax.set_yscale("log")
            plain(ax, "y")
        if ideal:
            ax.plot([], [], ls="--", c="grey", label="ideal: num_workers=1 x min(w, cores)")
            if scaling is not None:
                ax.plot([], [], ls=":", c="grey", label="USL fit")
        tuned = d["line"].str.count(",").max() > 1
        legend = "decoder, source" + (", allocator/normalize[/collate]" if tuned else "")
        # below the panel: with many lines, a legend inside covers some of them
        ax.legend(
            title=legend,
            fontsize="x-small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=2,
            frameon=False,
        )
    n = int(d["n_images"].max())
    batch = ", ".join(sorted(d["batch_size"].astype(str).unique()))
    fig.suptitle(
        f"{title}: {n} images, batch size {batch}\n{_few_batches(d)}; {machine_label(trials)}"
    )
    fig.tight_layout()
    return fig


def dataloader_scaling(
    trials, summary, speed, published, settings, phase, scaling=None, **_
) -> Figure:
    """DataLoader images/s vs num_workers per decoder and source, with the ideal line and
    the USL fit."""
    return _loader_panels(
        trials,
        phase,
        "images_per_s",
        "images/s, one epoch (median of repetitions)",
        "PyTorch DataLoader throughput (224 crop, normalised float32 batches)",
        ideal=True,
        scaling=scaling,
    )


def dataloader_first_batch(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Time from iter(loader) to the first batch vs num_workers."""
    return _loader_panels(
        trials,
        phase,
        "first_batch_seconds",
        "seconds from iter(loader) to the first batch",
        "DataLoader time to the first batch (workers already started)",
        ideal=False,
    )


def _payback(d: pd.DataFrame, caches: pd.DataFrame, n: int) -> list[tuple]:
    """(line, epochs, build seconds, seconds saved per epoch) of each decoded cache: after how
    many epochs its build (for these n images) is paid back by its faster epochs."""
    med = d.groupby(["decoder", "source", "workers"])["seconds"].median()
    measured = med.index.droplevel(2)
    payback = []
    for decoder in sorted(set(caches["decoder"])):
        info = caches[caches["decoder"] == decoder].iloc[0]
        if (decoder, "jpeg") not in measured:
            continue
        jpeg_best = med.loc[(decoder, "jpeg")].min()
        for source, build_col in (
            ("cache-npy", "npy_build_seconds"),
            ("cache-pickle", "pickle_build_seconds"),
        ):
            if (decoder, source) not in measured:
                continue
            best = med.loc[(decoder, source)].min()
            build = info[build_col] * n / info["images"]  # build time for these n images
            if source == "cache-pickle":  # loaded once per run, before the first epoch
                load = d[(d["decoder"] == decoder) & (d["source"] == source)]
                build += load["cache_load_seconds"].median()
            saving = jpeg_best - best
            epochs = build / saving if saving > 0 else float("inf")
            payback.append((f"{decoder}, {source}", epochs, build, saving))
    return payback


def _rates(ax, d: pd.DataFrame) -> None:
    """Images/s vs num_workers, a line per (decoder, source)."""
    rate = d.groupby(["decoder", "source", "workers"])["images_per_s"].median()
    for (decoder, source), g in rate.groupby(level=[0, 1]):
        g = g.droplevel([0, 1])
        ax.plot(g.index, g.to_numpy(), "o-", label=f"{decoder}, {source}")
    log2_workers(ax, sorted(d["workers"].unique()))
    ax.set(
        xlabel="num_workers",
        ylabel="images/s, one epoch (median)",
        yscale="log",
        title="DataLoader from JPEG vs from the decoded cache (warm page cache)",
    )
    plain(ax, "y")
    ax.legend(title="decoder, source", fontsize="x-small")


def _payback_bars(ax, payback: list[tuple]) -> None:
    if payback:
        labels = [p[0] for p in payback]
        values = [p[1] for p in payback]
        bars = ax.barh(labels, values, color=sns.color_palette("Set2", len(payback)))
        for bar, (_, epochs, build, saving) in zip(bars, payback, strict=True):
            ax.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {epochs:.2f} epochs (build {build:.1f} s, saves {saving:.2f} s/epoch)",
                va="center",
                fontsize="small",
            )
        ax.set_xlim(0, max(v for v in values if v != float("inf")) * 2.2 or 1)
    ax.set(
        xlabel="epochs after which the cache has paid for its build",
        title="build time / (best JPEG epoch - best cached epoch)",
    )


def dataloader_cache(
    trials, summary, speed, published, settings, phase, caches=None, **_
) -> Figure:
    """Images/s from JPEG vs from each decoded cache, and the epochs after which building the
    cache has paid for itself."""
    d = _loader(trials, phase)
    if d.empty or caches is None or caches.empty:
        return empty((7, 4), "no decoded-cache DataLoader trials in this study")
    d = d[(d["page_cache"] == "warm") & d["decoder"].isin(set(caches["decoder"]))]
    fig, axes = subplots(1, 2, figsize=(13, 4.8))
    n = int(d["n_images"].max())
    _rates(axes[0], d)
    _payback_bars(axes[1], _payback(d, caches, n))
    fig.suptitle(f"Is a decoded cache worth it? {n} images\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def _comparable(d):
    """The DataLoader trials to draw beside the shards: loose files only with the settings a
    shard trial has (decoder, batch, page cache, allocator, normalize, collate), so that other
    blocks on the same dataset (the per-item overhead block, warm) do not join the loose-file
    line."""
    keys = [k for k in ("decoder", "batch_size", "page_cache", *TUNING) if k in d]
    shards = d[d["source"] == "shards"]
    if shards.empty or not keys:
        return d
    wanted = set(map(tuple, shards[keys].astype(str).to_numpy()))
    mine = d[keys].astype(str).apply(tuple, axis=1).isin(wanted)
    return d[mine]


@every_dataset
def dataloader_shards(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """DataLoader images/s against num_workers, a panel per storage profile, a line per
    source: loose files (decode every epoch) and each shard size read with webdataset."""
    d = shard_datasets(rows(trials, phase, storage=None))
    d = _comparable(d[d["source"].isin(["jpeg", "shards"])]) if not d.empty else d
    if d.empty:
        return empty(
            (7, 4.5),
            "No DataLoader trials read shards: add source: [jpeg, shards] and\n"
            "shard_mb: [0, N, ...] to a dataloader block (config.yaml's imagenet-like)",
        )
    d = d.assign(packing=d["shard_mb"].astype(int))
    profiles = list(dict.fromkeys(d["storage"]))
    fig, axes = panels(len(profiles))
    top = float(d["images_per_s"].max()) * 1.2
    for ax, name in zip(axes.flat, profiles, strict=False):
        g = d[d["storage"] == name]
        for k, (mb, h) in enumerate(g.groupby("packing")):
            rates = h.groupby("workers")["images_per_s"]
            med, lo, hi = rates.median(), rates.min(), rates.max()
            ax.errorbar(
                med.index,
                med.to_numpy(),
                yerr=[med - lo, hi - med],
                marker="o",
                ms=4,
                capsize=2,
                color=PACKING_COLORS[k % 6],
                label=packing(mb),
            )
        log2_workers(ax, sorted(g["workers"].unique()))
        ax.set_ylim(0, top)
        ax.set(title=name, xlabel="num_workers", ylabel="images/s")
        ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[len(profiles) :]:
        ax.set_visible(False)
    keys = ", ".join(
        f"{k} {', '.join(map(str, d[k].unique()))}"
        for k in ("dataset", "decoder", "batch_size", "page_cache")
    )
    fig.suptitle(f"DataLoader from loose files or shards ({keys})\n{machine_label(trials)}", y=1.03)
    fig.tight_layout()
    return fig
