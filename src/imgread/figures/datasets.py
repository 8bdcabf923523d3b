"""Figures that compare datasets (drawn from every dataset's rows: ``every_dataset``): the
decode rate per format and encoding for each decoder; loose files against each shard size
per storage profile, for the load phase and the DataLoader."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from imgread.decoders import can_decode
from imgread.figures.common import empty, log2_workers, machine_label, rows, subplots
from imgread.phases.dataloader import TUNING

PACKING_COLORS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def _every_dataset(function):
    function.every_dataset = True
    return function


def _packing(mb) -> str:
    mb = int(mb)
    return "loose files" if mb == 0 else f"{mb} MB shards"


@_every_dataset
def decode_encodings(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Sequential decode rate (megapixels/s, median over repetitions) of each dataset's
    encoding, a bar per decoder, a panel per output, each dataset labelled with its encoding.
    The study's own dataset is left out where two or more others were measured (the encoding
    ablation: its pictures are another size). *n/a*: the decoder does not read that format."""
    d = rows(trials, phase)
    d = d[(d["variant"] == "sequential") & (d["delivery"] == "discard")]
    study = settings.get("study_dataset")
    if "dataset" in d and (d["dataset"] != study).any() and d["dataset"].nunique() > 2:
        d = d[d["dataset"] != study]
    if "dataset_encoding" not in d or d["dataset"].nunique() < 2:
        return empty(
            (7, 4.5),
            "Decode was measured on one dataset only: list datasets of other encodings\n"
            "under a decode block's dataset: [...] (config.yaml's enc-* datasets)",
        )
    d = d.assign(
        label=d["dataset"] + "\n" + d["dataset_encoding"].str.replace(", ", " "),
        format=d["dataset_encoding"].str.split().str[0].str.lower(),
    )
    formats = dict(zip(d["label"], d["format"], strict=False))
    outputs = list(dict.fromkeys(d["output"]))
    fig, axes = subplots(
        len(outputs),
        1,
        figsize=(max(7, 1.3 * d["label"].nunique()), 3.6 * len(outputs)),
        squeeze=False,
    )
    decoders = list(dict.fromkeys(d["decoder"]))
    width = 0.8 / len(decoders)
    labels = list(dict.fromkeys(d.sort_values("dataset")["label"]))
    for ax, output in zip(axes.flat, outputs, strict=True):
        g = d[d["output"] == output]
        med = g.groupby(["label", "decoder"])["megapixels_per_s"].median()
        for k, decoder in enumerate(decoders):
            xs = [i + (k - (len(decoders) - 1) / 2) * width for i in range(len(labels))]
            ys = [med.get((lab, decoder), float("nan")) for lab in labels]
            ax.bar(xs, ys, width, label=decoder)
            for x, y, lab in zip(xs, ys, labels, strict=True):
                fmt = formats[lab]
                if (
                    y != y
                    and fmt in ("jpeg", "png", "webp", "avif")
                    and not can_decode(decoder, fmt)
                ):
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize="x-small")
        ax.set_xticks(range(len(labels)), labels, fontsize="x-small")
        ax.set(ylabel="megapixels/s (one core)", title=f"output {output}")
        ax.legend(fontsize="x-small", ncols=min(5, len(decoders)))
    fig.suptitle(
        f"Decode rate per format and encoding, sequential, one core\n{machine_label(trials)}",
        y=1.02,
    )
    fig.tight_layout()
    return fig


def _shard_datasets(d: pd.DataFrame) -> pd.DataFrame:
    """The rows of the datasets some of whose cells read shards."""
    if "shard_mb" not in d:
        return d.iloc[0:0]
    packed = set(d.loc[d["shard_mb"].astype(str) != "0", "dataset"])
    return d[d["dataset"].isin(packed)]


def _panels(n: int, width: float = 4.6, height: float = 3.8):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    return subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


@_every_dataset
def load_shards(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Cold-read images/s of loose files and of each shard size, a panel per storage profile,
    a group of bars per reader (its best workers / in flight, median over repetitions)."""
    d = _shard_datasets(rows(trials, phase, storage=None))
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
    fig, axes = _panels(len(profiles))
    width = 0.8 / len(packings)
    for ax, name in zip(axes.flat, profiles, strict=False):
        g = best[best["storage"] == name]
        variants = list(dict.fromkeys(g["variant"]))
        for k, mb in enumerate(packings):
            h = g[g["packing"] == mb].set_index("variant")
            xs = [i + (k - (len(packings) - 1) / 2) * width for i in range(len(variants))]
            ys = [h["images_per_s"].get(v, float("nan")) for v in variants]
            ax.bar(xs, ys, width, label=_packing(mb), color=PACKING_COLORS[k % 6])
        ax.set_xticks(range(len(variants)), variants)
        ax.set(
            title=name + _retried(d[d["storage"] == name]), ylabel="images/s (cold, best workers)"
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
        Patch(color=PACKING_COLORS[k % 6], label=_packing(mb)) for k, mb in enumerate(packings)
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=len(handles), fontsize="small", frameon=False
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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


def _retried(g) -> str:
    """A panel title's second line where its trials retried reads (a failing server): the
    rates include the retries and their backoff."""
    n = int(g["retries"].fillna(0).sum()) if "retries" in g else 0
    return f"\n{n} reads retried (a failing server)" if n else ""


@_every_dataset
def dataloader_shards(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """DataLoader images/s against num_workers, a panel per storage profile, a line per
    source: loose files (decode every epoch) and each shard size read with webdataset."""
    d = _shard_datasets(rows(trials, phase, storage=None))
    d = _comparable(d[d["source"].isin(["jpeg", "shards"])]) if not d.empty else d
    if d.empty:
        return empty(
            (7, 4.5),
            "No DataLoader trials read shards: add source: [jpeg, shards] and\n"
            "shard_mb: [0, N, ...] to a dataloader block (config.yaml's imagenet-like)",
        )
    d = d.assign(packing=d["shard_mb"].astype(int))
    profiles = list(dict.fromkeys(d["storage"]))
    fig, axes = _panels(len(profiles))
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
                label=_packing(mb),
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
