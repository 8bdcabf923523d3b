"""The decode phase's figures: speedup and efficiency vs workers, throughput beside the
device-reading phase's, the published comparison, and what the decoder and delivery cost."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from imgread.answer.figures.common import (
    cores,
    device_label,
    empty,
    label,
    machine_label,
    rows,
    subplots,
    usl_curves,
)
from imgread.answer.figures.datasets import every_dataset
from imgread.decoders import can_decode
from imgread.phases.decode.tables import pipeline_cells, study_cells
from imgread.phases.registry import PHASES


def _speed_lines(ax, d: pd.DataFrame, column: str, palette: dict) -> None:
    """One line per n, with the bootstrap CI band of a speedup in its line's colour."""
    sns.lineplot(
        data=d,
        x="workers",
        y=column,
        hue="n_images",
        marker="o",
        palette=palette,
        ax=ax,
        errorbar=None,
    )
    if column.startswith("speedup"):
        for n, g in d.groupby("n_images"):
            ax.fill_between(
                g["workers"],
                g[f"{column}_ci_low"],
                g[f"{column}_ci_high"],
                color=palette[n],
                alpha=0.15,
                lw=0,
            )


def _ceilings(ax, n_cores: int, d: pd.DataFrame, xs, ideal: str, palette, curve, scaling) -> None:
    """The ideal line and the CPU ceiling min(workers, cores): as speedups ("linear", with
    each line's USL fit) or as efficiencies ("flat")."""
    ceiling = [min(x, n_cores) for x in xs]
    line = dict(ls="-", lw=2, c="black", alpha=0.6, label=f"CPU ceiling ({n_cores} cores)")
    if ideal == "linear":
        ax.plot(xs, xs, ls="--", c="grey", label="ideal (linear)")
        ax.plot(xs, ceiling, **line)
        keys = d[[c for c in curve if c in d]]
        usl_curves(ax, scaling, keys.drop_duplicates(), palette, "n_images", xs)
    else:
        ax.axhline(1.0, ls="--", c="grey", label="ideal")
        ax.plot(xs, [c / x for c, x in zip(ceiling, xs, strict=True)], **line)


def _speed_panels(speed, trials, phase, column, ylabel, title, ideal, scaling=None) -> Figure:
    """One panel per parallel variant (and per machine, side by side) of the study's cells."""
    df = study_cells(speed)
    df = df[df["variant"] != "sequential"]
    machines = sorted(df["machine"].unique()) if "machine" in df else ["local"]
    variants = [(v, m) for m in machines for v in sorted(df["variant"].unique())]
    fig, axes = subplots(
        1,
        max(len(variants), 1),
        figsize=(5.5 * max(len(variants), 1), 4.5),
        sharey=True,
        squeeze=False,
    )
    n_cores = cores(trials)
    curve = ("phase", "machine", "variant", *(p.name for p in phase.params), "n_images")
    sizes = sorted(df["n_images"].unique())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes)), strict=True))
    for ax, (variant, machine) in zip(axes[0], variants, strict=False):
        d = df[df["variant"] == variant]
        if "machine" in d:
            d = d[d["machine"] == machine]
        _speed_lines(ax, d, column, palette)
        xs = sorted(d["workers"].unique())
        ax.set_xticks(xs)
        _ceilings(ax, n_cores, d, xs, ideal, palette, curve, scaling)
        ax.set(
            xlabel="workers",
            ylabel=ylabel,
            title=variant if len(machines) == 1 else f"{variant} on {machine}",
        )
        ax.legend(title="images", fontsize="small")
    fig.suptitle(f"{title}\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def decode_speedup(trials, summary, speed, published, settings, phase, scaling=None, **_) -> Figure:
    """Decode speedup vs workers, one line per n, with its USL fit, the ideal line and the
    CPU ceiling min(workers, physical cores)."""
    return _speed_panels(
        speed,
        trials,
        phase,
        "speedup",
        "speedup over sequential (decode time only)",
        "Decode speedup, the study's cells: Pillow, full size, pixels discarded\n"
        "(pool start-up excluded; shaded: 95 % bootstrap CI; dotted: USL fit)",
        "linear",
        scaling=scaling,
    )


def decode_efficiency(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Decode efficiency (speedup / workers) vs workers."""
    return _speed_panels(
        speed,
        trials,
        phase,
        "efficiency",
        "efficiency = speedup / workers",
        "Decode efficiency, the study's cells: Pillow, full size, pixels discarded "
        "(pool start-up excluded)",
        "flat",
    )


def _throughput_panel(ax, rows: pd.DataFrame, col: str, ylabel: str, title: str) -> None:
    df = rows.assign(label=label)
    if not df.empty:
        sns.lineplot(
            data=df, x="n_images", y=col, hue="label", marker="o", errorbar=("ci", 95), ax=ax
        )
        ax.legend(title="variant (workers)", fontsize="x-small")
    ax.set(xlabel="images", ylabel=ylabel, title=title)


def throughput(trials, summary, speed, published, settings, phase, device=None, **_) -> Figure:
    """MB/s of the phase that reads the device (its ceiling) and decode megapixels/s vs n,
    by variant."""
    fig, axes = subplots(1, 2, figsize=(12, 4.5))
    reader = next((p for p in PHASES.values() if p.ceiling == "device"), None)
    if reader is None:
        axes[0].set(title="no phase reads the device")
    else:
        ax = axes[0]
        _throughput_panel(
            ax,
            rows(trials, reader),
            "mb_per_s",
            f"{reader.name} throughput (MB/s, cold cache)",
            reader.name,
        )
        if device:
            ax.axhline(device["device_mb_per_s"], ls="--", c="black", label=device_label(device))
            ax.legend(title="variant (workers)", fontsize="x-small")
    _throughput_panel(
        axes[1],
        study_cells(trials),
        "megapixels_per_s",
        f"{phase.name} throughput (megapixels/s)",
        f"{phase.name} (Pillow, full size, pixels discarded)",
    )
    fig.suptitle(f"Throughput\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def published_comparison(trials, summary, speed, published, settings, **_) -> Figure:
    """This machine's process-pool decode speedup beside the study's published curves."""
    fig, axes = subplots(1, 2, figsize=(12, 4.5), sharey=True)
    pub = published.rename(columns={"processes": "workers"})
    sns.lineplot(
        data=pub,
        x="workers",
        y="speedup",
        hue="n_images",
        marker="o",
        palette="viridis",
        ax=axes[0],
    )
    axes[0].set(
        title="published (Apple M1, 4P+4E cores)",
        xlabel="processes",
        ylabel="speedup incl. pool start-up",
    )
    ours = study_cells(speed)
    ours = ours[ours["variant"] == "processes"]
    sns.lineplot(
        data=ours,
        x="workers",
        y="speedup_total",
        hue="n_images",
        marker="o",
        palette="viridis",
        ax=axes[1],
    )
    axes[1].set(title=f"this machine ({machine_label(trials)})", xlabel="processes")
    for ax in axes:
        xs = sorted(set(pub["workers"]) | set(ours["workers"]))
        ax.plot(xs, xs, ls="--", c="grey", label="ideal")
        ax.legend(title="images", fontsize="small")
    fig.suptitle(
        "Decode speedup of ProcessPoolExecutor, measured the study's way (start-up inside the time)"
    )
    fig.tight_layout()
    return fig


DECODER_ORDER = ("pillow", "pillow-draft", "opencv", "simplejpeg")
DELIVERY_BARS = (  # (variant, delivery): one bar each, discard light and pixels dark
    ("sequential", "discard"),
    ("sequential", "pixels"),
    ("threads", "discard"),
    ("threads", "pixels"),
    ("processes", "discard"),
    ("processes", "pixels"),
    ("processes-shm", "pixels"),
)


def _cost_bars(ax, med: pd.Series, output: str, bars, colour, w: int, n_cores: int) -> None:
    """One group of bars per decoder of ``output``, with its sequential x min(w, cores) line."""
    width = 0.8 / max(len(bars), 1)
    decoders = [x for x in DECODER_ORDER if (output, x) in {k[:2] for k in med.index}]
    for i, dec in enumerate(decoders):
        for j, (variant, delivery) in enumerate(bars):
            key = (output, dec, variant, delivery)
            if key in med.index:
                x = i - 0.4 + width * (j + 0.5)
                ax.bar(x, med[key], width, color=colour[(variant, delivery)])
        key = (output, dec, "sequential", "discard")
        if key in med.index:
            ax.hlines(med[key] * min(w, n_cores), i - 0.42, i + 0.42, colors="black", lw=1.5)
    ax.set_xticks(range(len(decoders)), decoders)
    shape = "as decoded" if output == "full" else "shorter side 256, centre crop 224"
    ax.set(
        xlabel="decoder",
        ylabel="images/s (median of repetitions)",
        title=f"output {output} ({shape})",
    )


def _cost_legend(fig, bars, colour, w: int, n_cores: int) -> None:
    handles = [
        Patch(color=colour[b], label=f"{b[0]}{'' if b[0] == 'sequential' else f' ({w})'}, {b[1]}")
        for b in bars
    ]
    handles.append(
        Line2D([], [], c="black", lw=1.5, label=f"sequential x min({w}, {n_cores} cores)")
    )
    fig.legend(
        handles=handles,
        title="variant (workers), delivery",
        loc="lower center",
        ncols=4,
        fontsize="small",
        bbox_to_anchor=(0.5, -0.02),
    )


def decode_cost(trials, summary, speed, published, settings, **_) -> Figure:
    """What the decoder and the delivery cost: median images/s per decoder, one bar per
    (variant, delivery) at the smallest parallel worker count, with the core ceiling."""
    d = pipeline_cells(trials)
    outputs = [o for o in ("full", "crop224") if o in set(d["output"])]
    fig, axes = subplots(
        1, max(len(outputs), 1), figsize=(7.5 * max(len(outputs), 1), 5), squeeze=False
    )
    if d.empty:
        axes[0][0].text(0.5, 0.5, "no decoder/delivery cells in this study", ha="center")
        return fig
    parallel = sorted(set(d.loc[d["variant"] != "sequential", "workers"]))
    w = 2 if 2 in parallel else (parallel[0] if parallel else 1)
    n = int(d["n_images"].max())
    d = d[(d["n_images"] == n) & ((d["variant"] == "sequential") | (d["workers"] == w))]
    n_cores = cores(trials)
    med = d.groupby(["output", "decoder", "variant", "delivery"])["images_per_s"].median()
    colour = dict(zip(DELIVERY_BARS, sns.color_palette("Paired", len(DELIVERY_BARS)), strict=True))
    bars = [b for b in DELIVERY_BARS if b in {k[2:] for k in med.index}]
    for ax, output in zip(axes[0], outputs, strict=False):
        _cost_bars(ax, med, output, bars, colour, w, n_cores)
    _cost_legend(fig, bars, colour, w, n_cores)
    fig.suptitle(
        f"What the decoder and the delivery cost: {n} images, warm page cache\n"
        f"{machine_label(trials)}"
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


@every_dataset
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
