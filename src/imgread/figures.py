"""Figures of a study, drawn with seaborn from the tidy tables; each saved as PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from imgread.analysis import pipeline_cells, study_cells  # noqa: E402
from imgread.phases.registry import FIGURES  # noqa: E402


def machine_label(trials: pd.DataFrame) -> str:
    """'CPU model, N logical cores' of the machine the trials ran on (several if mixed)."""
    pairs = trials[["cpu_model", "logical_cores"]].drop_duplicates()
    return "; ".join(f"{m}, {c} logical cores" for m, c in pairs.itertuples(index=False))


def _label(df: pd.DataFrame) -> pd.Series:
    label = df["variant"] + df["workers"].map(lambda w: f" ({w})")
    if "machine" in df and df["machine"].nunique() > 1:  # machines side by side
        label = label + " on " + df["machine"].astype(str)
    return label


def _cores(trials: pd.DataFrame) -> int:
    col = "physical_cores" if "physical_cores" in trials else "logical_cores"
    return int(trials[col].max())


def _save(fig, stem: Path, dpi: int) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def load_time(trials, summary, speed, published, settings, device=None, **_):
    """Cold-cache load time per n by variant, with 95 % CIs over repetitions."""
    df = trials[trials["phase"] == "load"].assign(label=lambda d: _label(d))
    fig, ax = plt.subplots(figsize=(7, 4.5))
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


def device_label(device: dict) -> str:
    """'device ceiling 1291 MB/s (fio-3.33, 8 readers)'."""
    tool = device["fio_version"] if device["method"] == "fio" else "O_DIRECT reader"
    return (
        f"device ceiling {device['device_mb_per_s']:.0f} MB/s "
        f"({tool}, {device['best_jobs']} readers)"
    )


def _usl_curves(ax, scaling, phase_rows, palette, hue, xs, scale=None):
    """Draw each curve's USL fit (dotted, in its line's colour) where it was fitted."""
    from imgread.scaling import usl  # noqa: PLC0415

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


def _speed_panels(speed, trials, column, ylabel, title, ideal, scaling=None):
    df = study_cells(speed)
    df = df[df["variant"] != "sequential"]
    # one panel per variant, and per machine where several were measured (side by side)
    machines = sorted(df["machine"].unique()) if "machine" in df else ["local"]
    variants = [(v, m) for m in machines for v in sorted(df["variant"].unique())]
    fig, axes = plt.subplots(
        1,
        max(len(variants), 1),
        figsize=(5.5 * max(len(variants), 1), 4.5),
        sharey=True,
        squeeze=False,
    )
    cores = _cores(trials)
    sizes = sorted(df["n_images"].unique())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes)), strict=True))
    for ax, (variant, machine) in zip(axes[0], variants, strict=False):
        d = df[df["variant"] == variant]
        if "machine" in d:
            d = d[d["machine"] == machine]
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
        if column.startswith("speedup"):  # bootstrap CI band, in its line's colour
            for n, g in d.groupby("n_images"):
                ax.fill_between(
                    g["workers"],
                    g[f"{column}_ci_low"],
                    g[f"{column}_ci_high"],
                    color=palette[n],
                    alpha=0.15,
                    lw=0,
                )
        xs = sorted(d["workers"].unique())
        ax.set_xticks(xs)
        ceiling = [min(x, cores) for x in xs]
        if ideal == "linear":
            ax.plot(xs, xs, ls="--", c="grey", label="ideal (linear)")
            ax.plot(
                xs,
                ceiling,
                ls="-",
                lw=2,
                c="black",
                alpha=0.6,
                label=f"CPU ceiling ({cores} cores)",
            )
            keys = d[
                [
                    c
                    for c in (
                        "phase",
                        "machine",
                        "variant",
                        "decoder",
                        "output",
                        "delivery",
                        "n_images",
                    )
                    if c in d
                ]
            ]
            _usl_curves(ax, scaling, keys.drop_duplicates(), palette, "n_images", xs)
        else:
            ax.axhline(1.0, ls="--", c="grey", label="ideal")
            ax.plot(
                xs,
                [c / x for c, x in zip(ceiling, xs, strict=True)],
                ls="-",
                lw=2,
                c="black",
                alpha=0.6,
                label=f"CPU ceiling ({cores} cores)",
            )
        ax.set(
            xlabel="workers",
            ylabel=ylabel,
            title=variant if len(machines) == 1 else f"{variant} on {machine}",
        )
        ax.legend(title="images", fontsize="small")
    fig.suptitle(f"{title}\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def decode_speedup(trials, summary, speed, published, settings, scaling=None, **_):
    """Decode speedup vs workers, one line per n, with its USL fit, the ideal line and the
    CPU ceiling min(workers, physical cores)."""
    return _speed_panels(
        speed,
        trials,
        "speedup",
        "speedup over sequential (decode time only)",
        "Decode speedup, the study's cells: Pillow, full size, pixels discarded\n"
        "(pool start-up excluded; shaded: 95 % bootstrap CI; dotted: USL fit)",
        "linear",
        scaling=scaling,
    )


def decode_efficiency(trials, summary, speed, published, settings, **_):
    """Decode efficiency (speedup / workers) vs workers."""
    return _speed_panels(
        speed,
        trials,
        "efficiency",
        "efficiency = speedup / workers",
        "Decode efficiency, the study's cells: Pillow, full size, pixels discarded "
        "(pool start-up excluded)",
        "flat",
    )


def throughput(trials, summary, speed, published, settings, device=None, **_):
    """Load MB/s and decode megapixels/s vs n, by variant."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, phase, col, ylabel in (
        (axes[0], "load", "mb_per_s", "load throughput (MB/s, cold cache)"),
        (axes[1], "decode", "megapixels_per_s", "decode throughput (megapixels/s)"),
    ):
        rows = study_cells(trials) if phase == "decode" else trials[trials["phase"] == phase]
        df = rows.assign(label=lambda d: _label(d))
        if not df.empty:
            sns.lineplot(
                data=df, x="n_images", y=col, hue="label", marker="o", errorbar=("ci", 95), ax=ax
            )
            ax.legend(title="variant (workers)", fontsize="x-small")
        if phase == "load" and device:
            ax.axhline(device["device_mb_per_s"], ls="--", c="black", label=device_label(device))
            ax.legend(title="variant (workers)", fontsize="x-small")
        title = "decode (Pillow, full size, pixels discarded)" if phase == "decode" else phase
        ax.set(xlabel="images", ylabel=ylabel, title=title)
    fig.suptitle(f"Throughput\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def published_comparison(trials, summary, speed, published, settings, **_):
    """This machine's process-pool decode speedup beside the study's published curves."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
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


def residency(trials, summary, speed, published, settings, **_):
    """Fraction of the images' pages resident before each trial, by phase and cache method."""
    df = trials.assign(
        resident=trials["resident_fraction_before"].astype(float),
        method=trials["phase"] + ": " + trials["cache_method"],
    )
    fig, ax = plt.subplots(figsize=(7, 4.5))
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


def decode_cost(trials, summary, speed, published, settings, **_):
    """What the decoder and the delivery cost: median images/s per decoder, one bar per
    (variant, delivery) at the smallest parallel worker count, with the core ceiling."""
    d = pipeline_cells(trials)
    outputs = [o for o in ("full", "crop224") if o in set(d["output"])]
    fig, axes = plt.subplots(
        1, max(len(outputs), 1), figsize=(7.5 * max(len(outputs), 1), 5), squeeze=False
    )
    if d.empty:
        axes[0][0].text(0.5, 0.5, "no decoder/delivery cells in this study", ha="center")
        return fig
    parallel = sorted(set(d.loc[d["variant"] != "sequential", "workers"]))
    w = 2 if 2 in parallel else (parallel[0] if parallel else 1)
    n = int(d["n_images"].max())
    d = d[(d["n_images"] == n) & ((d["variant"] == "sequential") | (d["workers"] == w))]
    cores = int(trials["physical_cores"].max()) if "physical_cores" in trials else _cores(trials)
    med = d.groupby(["output", "decoder", "variant", "delivery"])["images_per_s"].median()
    colour = dict(zip(DELIVERY_BARS, sns.color_palette("Paired", len(DELIVERY_BARS)), strict=True))
    bars = [b for b in DELIVERY_BARS if b in {k[2:] for k in med.index}]
    width = 0.8 / max(len(bars), 1)
    for ax, output in zip(axes[0], outputs, strict=False):
        decoders = [x for x in DECODER_ORDER if (output, x) in {k[:2] for k in med.index}]
        for i, dec in enumerate(decoders):
            for j, (variant, delivery) in enumerate(bars):
                key = (output, dec, variant, delivery)
                if key in med.index:
                    x = i - 0.4 + width * (j + 0.5)
                    ax.bar(x, med[key], width, color=colour[(variant, delivery)])
            key = (output, dec, "sequential", "discard")
            if key in med.index:
                ax.hlines(med[key] * min(w, cores), i - 0.42, i + 0.42, colors="black", lw=1.5)
        ax.set_xticks(range(len(decoders)), decoders)
        shape = "as decoded" if output == "full" else "shorter side 256, centre crop 224"
        ax.set(
            xlabel="decoder",
            ylabel="images/s (median of repetitions)",
            title=f"output {output} ({shape})",
        )
    handles = [
        Patch(color=colour[b], label=f"{b[0]}{'' if b[0] == 'sequential' else f' ({w})'}, {b[1]}")
        for b in bars
    ]
    handles.append(Line2D([], [], c="black", lw=1.5, label=f"sequential x min({w}, {cores} cores)"))
    fig.legend(
        handles=handles,
        title="variant (workers), delivery",
        loc="lower center",
        ncols=4,
        fontsize="small",
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(
        f"What the decoder and the delivery cost: {n} images, warm page cache\n"
        f"{machine_label(trials)}"
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def _plain(ax, *axes: str) -> None:
    """Plain numbers (20, 300) on log axes instead of 2x10^1."""
    from matplotlib.ticker import FuncFormatter

    def minor(v, _):  # 20, 50, 200, 500: enough labels when the data spans one decade
        return f"{v:g}" if f"{v:.0e}"[0] in "25" else ""

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(minor))


def _empty(fig_size, message):
    fig, ax = plt.subplots(figsize=fig_size)
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    return fig


def _loader(trials):
    d = trials[trials["phase"] == "dataloader"].copy()
    if d.empty:
        return d
    d["line"] = d["decoder"] + ", " + d["source"]
    return d


def _physical_cores(trials) -> int:
    col = "physical_cores" if "physical_cores" in trials else "logical_cores"
    return int(trials[col].max())


def _few_batches(d) -> str:
    few = d[d["batches_per_worker_min"] < 10]
    if few.empty:
        return "every worker got at least 10 batches"
    ws = ", ".join(str(int(w)) for w in sorted(few["workers"].unique()))
    return f"hollow markers: fewer than 10 batches per worker (num_workers {ws})"


def _loader_panels(trials, column, ylabel, title, ideal, log=True, scaling=None):
    d = _loader(trials)
    if d.empty:
        return _empty((7, 4), "no DataLoader trials in this study")
    states = [s for s in ("cold", "warm") if s in set(d["page_cache"])]
    fig, axes = plt.subplots(
        1, len(states), figsize=(6.5 * len(states), 4.8), sharey=True, squeeze=False
    )
    cores = _physical_cores(trials)
    lines = sorted(d["line"].unique())
    colours = dict(zip(lines, sns.color_palette("tab10", len(lines)), strict=True))
    for ax, state in zip(axes[0], states, strict=True):
        g = d[d["page_cache"] == state]
        med = g.groupby(["line", "workers"]).agg(
            y=(column, "median"), few=("batches_per_worker_min", "min")
        )
        for line in lines:
            if line not in med.index.get_level_values(0):
                continue
            m = med.loc[line].sort_index()
            xs = m.index.to_numpy()
            ax.plot(xs, m["y"], c=colours[line], label=line)
            for x, y, few in zip(xs, m["y"], m["few"], strict=True):
                ax.plot(x, y, "o", c=colours[line], mfc="white" if few < 10 else colours[line])
            if ideal and 1 in m.index:
                ax.plot(
                    xs,
                    [m["y"][1] * max(min(x, cores), 1) for x in xs],
                    ls="--",
                    c=colours[line],
                    lw=0.8,
                    alpha=0.7,
                )
                fit = _loader_fit(scaling, g[g["line"] == line])
                if fit is not None:  # the USL's speedup x the num_workers=1 rate
                    from imgread.scaling import usl  # noqa: PLC0415

                    grid = np.linspace(1, max(xs), 100)
                    ax.plot(grid, m["y"][1] * usl(grid, *fit), ls=":", c=colours[line], lw=1.2)
        ax.axvline(cores, ls=":", c="black", label=f"{cores} physical cores")
        ax.set_xscale("symlog", base=2, linthresh=1)
        ticks = sorted(g["workers"].unique())
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        ax.set(xlabel="num_workers", ylabel=ylabel, title=f"page cache {state}")
        if log:  # sources differ ~10x: a log axis keeps every line readable
            ax.set_yscale("log")
            _plain(ax, "y")
        if ideal:
            ax.plot([], [], ls="--", c="grey", label="ideal: num_workers=1 x min(w, cores)")
            if scaling is not None:
                ax.plot([], [], ls=":", c="grey", label="USL fit")
        ax.legend(title="decoder, source", fontsize="x-small")
    n = int(d["n_images"].max())
    batch = ", ".join(sorted(d["batch_size"].astype(str).unique()))
    fig.suptitle(
        f"{title}: {n} images, batch size {batch}\n{_few_batches(d)}; {machine_label(trials)}"
    )
    fig.tight_layout()
    return fig


def _loader_fit(scaling, rows) -> tuple[float, float] | None:
    """(a, b) of the USL fit of a DataLoader line (None if it was not fitted)."""
    if scaling is None or scaling.empty or rows.empty:
        return None
    keys = ["phase", "variant", "decoder", "source", "batch_size", "page_cache", "pin_memory"]
    keys += ["n_images"]
    cell = rows.iloc[0]
    mask = scaling["status"] == "ok"
    for k in keys:
        mask &= scaling[k].astype(str) == str(cell[k])
    fit = scaling[mask]
    return (float(fit["a"].iloc[0]), float(fit["b"].iloc[0])) if not fit.empty else None


def dataloader_scaling(trials, summary, speed, published, settings, scaling=None, **_):
    """DataLoader images/s vs num_workers per decoder and source, with the ideal line and
    the USL fit."""
    return _loader_panels(
        trials,
        "images_per_s",
        "images/s, one epoch (median of repetitions)",
        "PyTorch DataLoader throughput (224 crop, normalised float32 batches)",
        ideal=True,
        scaling=scaling,
    )


def dataloader_first_batch(trials, summary, speed, published, settings, **_):
    """Time from iter(loader) to the first batch vs num_workers."""
    return _loader_panels(
        trials,
        "first_batch_seconds",
        "seconds from iter(loader) to the first batch",
        "DataLoader time to the first batch (workers already started)",
        ideal=False,
    )


def dataloader_cache(trials, summary, speed, published, settings, caches=None, **_):
    """Images/s from JPEG vs from each decoded cache, and the epochs after which building the
    cache has paid for itself."""
    d = _loader(trials)
    if d.empty or caches is None or caches.empty:
        return _empty((7, 4), "no decoded-cache DataLoader trials in this study")
    d = d[(d["page_cache"] == "warm") & d["decoder"].isin(set(caches["decoder"]))]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    med = d.groupby(["decoder", "source", "workers"])["seconds"].median()
    rate = d.groupby(["decoder", "source", "workers"])["images_per_s"].median()
    n = int(d["n_images"].max())
    payback = []
    for (decoder, source), g in rate.groupby(level=[0, 1]):
        g = g.droplevel([0, 1])
        axes[0].plot(g.index, g.to_numpy(), "o-", label=f"{decoder}, {source}")
    for decoder in sorted(set(caches["decoder"])):
        info = caches[caches["decoder"] == decoder].iloc[0]
        if (decoder, "jpeg") not in rate.index.droplevel(2):
            continue
        jpeg_best = med.loc[(decoder, "jpeg")].min()
        for source, build_col in (
            ("cache-npy", "npy_build_seconds"),
            ("cache-pickle", "pickle_build_seconds"),
        ):
            if (decoder, source) not in med.index.droplevel(2):
                continue
            best = med.loc[(decoder, source)].min()
            build = info[build_col] * n / info["images"]  # build time for these n images
            if source == "cache-pickle":  # loaded once per run, before the first epoch
                load = d[(d["decoder"] == decoder) & (d["source"] == source)]
                build += load["cache_load_seconds"].median()
            saving = jpeg_best - best
            epochs = build / saving if saving > 0 else float("inf")
            payback.append((f"{decoder}, {source}", epochs, build, saving))
    ticks = sorted(d["workers"].unique())
    axes[0].set_xscale("symlog", base=2, linthresh=1)
    axes[0].set_xticks(ticks, [str(int(t)) for t in ticks])
    axes[0].set(
        xlabel="num_workers",
        ylabel="images/s, one epoch (median)",
        yscale="log",
        title="DataLoader from JPEG vs from the decoded cache (warm page cache)",
    )
    _plain(axes[0], "y")
    axes[0].legend(title="decoder, source", fontsize="x-small")
    if payback:
        labels = [p[0] for p in payback]
        values = [p[1] for p in payback]
        bars = axes[1].barh(labels, values, color=sns.color_palette("Set2", len(payback)))
        for bar, (_, epochs, build, saving) in zip(bars, payback, strict=True):
            axes[1].text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {epochs:.2f} epochs (build {build:.1f} s, saves {saving:.2f} s/epoch)",
                va="center",
                fontsize="small",
            )
        axes[1].set_xlim(0, max(v for v in values if v != float("inf")) * 2.2 or 1)
    axes[1].set(
        xlabel="epochs after which the cache has paid for its build",
        title="build time / (best JPEG epoch - best cached epoch)",
    )
    fig.suptitle(f"Is a decoded cache worth it? {n} images\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


PRODUCERS = ("sequential", "processes", "threads", "thread-per-frame", "asyncio")


def _stream(trials):
    d = trials[trials["phase"] == "stream"].copy()
    for col in ("fps", "compute_ms"):
        if col in d:
            d[col] = d[col].astype(int)
    return d


def _producer_colours():
    return dict(zip(PRODUCERS, sns.color_palette("tab10", len(PRODUCERS)), strict=True))


def stream_latency_cdf(trials, summary, speed, published, settings, frames=None, **_):
    """Latency CDF per producer at one load: the highest offered fps with the longest model."""
    d = _stream(trials)
    if d.empty or frames is None or frames.empty:
        return _empty((7, 4), "no stream trials in this study")
    f = frames[frames["phase"] == "stream"].copy()
    for col in ("fps", "compute_ms"):
        f[col] = f[col].astype(int)
    rated = d[d["fps"] > 0]
    pick = rated if not rated.empty else d
    fps = int(pick["fps"].max())
    cms = int(pick[pick["fps"] == fps]["compute_ms"].max())
    kinds = sorted(set(pick[(pick["fps"] == fps) & (pick["compute_ms"] == cms)]["compute"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.8), squeeze=False)
    colours = _producer_colours()
    warm = int(d["warmup_frames"].max())
    for ax, kind in zip(axes[0], kinds, strict=True):
        g = f[(f["fps"] == fps) & (f["compute_ms"] == cms) & (f["compute"] == kind)]
        g = g[g["frame"] >= warm]
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
            title=f"model: {cms} ms {kind}",
        )
        _plain(ax, "x")
        ax.legend(title="producer (workers)", fontsize="x-small", ncols=2)
    fig.suptitle(
        f"Stream latency at {fps} fps offered ({'all at once' if not fps else 'fixed rate'}); "
        f"first {warm} frames of each trial left out; dashed: more than 2 workers\n"
        f"{machine_label(trials)}"
    )
    fig.tight_layout()
    return fig


def stream_p99(trials, summary, speed, published, settings, **_):
    """p99 latency vs offered fps, per producer at its best worker count, per model."""
    d = _stream(trials)
    d = d[d["fps"] > 0]
    if d.empty:
        return _empty((7, 4), "no stream trials at a fixed rate in this study")
    models = sorted({(int(m), k) for m, k in zip(d["compute_ms"], d["compute"], strict=True)})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.8), squeeze=False)
    colours = _producer_colours()
    for ax, (cms, kind) in zip(axes[0], models, strict=True):
        g = d[(d["compute_ms"] == cms) & (d["compute"] == kind)]
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
        ax.plot(xs, [1e3 / x for x in xs], ls=":", c="black", label="one frame interval")
        ax.set_xticks(xs)
        ax.set(
            yscale="log",
            xlabel="offered fps",
            ylabel="p99 latency (ms, log)",
            title=f"model: {cms} ms {kind}",
        )
        _plain(ax, "y")
        ax.legend(title="producer (best workers)", fontsize="x-small")
    fig.suptitle(f"99th percentile latency vs offered load\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def stream_au(trials, summary, speed, published, settings, **_):
    """Consumer utilisation (AU) vs workers per producer and model, all frames at once."""
    d = _stream(trials)
    d = d[(d["fps"] == 0) & (d["compute_ms"] > 0)]
    if d.empty:
        return _empty((7, 4), "no stream trials with a model and every frame at once")
    models = sorted({(int(m), k) for m, k in zip(d["compute_ms"], d["compute"], strict=True)})
    fig, axes = plt.subplots(
        1, len(models), figsize=(5.5 * len(models), 4.8), sharey=True, squeeze=False
    )
    colours = _producer_colours()
    cores = _physical_cores(trials)
    for ax, (cms, kind) in zip(axes[0], models, strict=True):
        g = d[(d["compute_ms"] == cms) & (d["compute"] == kind)]
        med = g.groupby(["variant", "workers"])["au"].median().reset_index()
        for variant, h in med.groupby("variant"):
            ax.plot(h["workers"], h["au"], "o-", c=colours.get(variant), label=variant)
        ax.axhline(0.9, ls="--", c="red", label="AU 0.90 (DLIO's pass mark)")
        ax.axvline(cores, ls=":", c="black", label=f"{cores} physical cores")
        ticks = sorted(g["workers"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
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


PLOTTERS: dict[str, Callable] = {name: globals()[name] for name in FIGURES}


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
    """Draw figure ``name`` and save it as ``out_stem``.png and .svg."""
    sns.set_theme(
        style=settings.get("style", "whitegrid"), context=settings.get("context", "paper")
    )
    fig = PLOTTERS[name](
        trials,
        summary,
        speed,
        published,
        settings,
        caches=caches,
        frames=frames,
        scaling=scaling,
        device=device,
    )
    return _save(fig, Path(out_stem), int(settings.get("dpi", 150)))
