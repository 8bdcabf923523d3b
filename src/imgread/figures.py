"""Figures of a study, drawn with seaborn from the tidy tables; each saved as PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from imgread.config import FIGURES  # noqa: E402


def machine_label(trials: pd.DataFrame) -> str:
    """'CPU model, N logical cores' of the machine the trials ran on (several if mixed)."""
    pairs = trials[["cpu_model", "logical_cores"]].drop_duplicates()
    return "; ".join(f"{m}, {c} logical cores" for m, c in pairs.itertuples(index=False))


def _label(df: pd.DataFrame) -> pd.Series:
    return df["variant"] + df["workers"].map(lambda w: f" ({w})")


def _cores(trials: pd.DataFrame) -> int:
    return int(trials["logical_cores"].max())


def _save(fig, stem: Path, dpi: int) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def load_time(trials, summary, speed, published, settings):
    """Cold-cache load time per n by variant, with 95 % CIs over repetitions."""
    df = trials[trials["phase"] == "load"].assign(label=lambda d: _label(d))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(
        data=df, x="n_images", y="seconds", hue="label", marker="o", errorbar=("ci", 95), ax=ax
    )
    ax.set(
        xlabel="images read",
        ylabel="load time (s), cold page cache",
        title=f"Loading compressed bytes\n{machine_label(trials)}",
    )
    ax.legend(title="variant (workers)", fontsize="small")
    return fig


def _speed_panels(speed, trials, column, ylabel, title, ideal):
    df = speed[(speed["phase"] == "decode") & (speed["variant"] != "sequential")]
    variants = sorted(df["variant"].unique())
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
    for ax, variant in zip(axes[0], variants, strict=False):
        d = df[df["variant"] == variant]
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
        if ideal == "linear":
            ax.plot(xs, xs, ls="--", c="grey", label="ideal")
        else:
            ax.axhline(1.0, ls="--", c="grey", label="ideal")
        ax.axvline(cores, ls=":", c="black", label=f"{cores} logical cores")
        ax.set(xlabel="workers", ylabel=ylabel, title=variant)
        ax.legend(title="images", fontsize="small")
    fig.suptitle(f"{title}\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def decode_speedup(trials, summary, speed, published, settings):
    """Decode speedup vs workers, one line per n, ideal line and the machine's core count."""
    return _speed_panels(
        speed,
        trials,
        "speedup",
        "speedup over sequential (decode time only)",
        "Decode speedup (pool start-up excluded; shaded: 95 % bootstrap CI)",
        "linear",
    )


def decode_efficiency(trials, summary, speed, published, settings):
    """Decode efficiency (speedup / workers) vs workers."""
    return _speed_panels(
        speed,
        trials,
        "efficiency",
        "efficiency = speedup / workers",
        "Decode efficiency (pool start-up excluded)",
        "flat",
    )


def throughput(trials, summary, speed, published, settings):
    """Load MB/s and decode megapixels/s vs n, by variant."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, phase, col, ylabel in (
        (axes[0], "load", "mb_per_s", "load throughput (MB/s, cold cache)"),
        (axes[1], "decode", "megapixels_per_s", "decode throughput (megapixels/s)"),
    ):
        df = trials[trials["phase"] == phase].assign(label=lambda d: _label(d))
        if not df.empty:
            sns.lineplot(
                data=df, x="n_images", y=col, hue="label", marker="o", errorbar=("ci", 95), ax=ax
            )
            ax.legend(title="variant (workers)", fontsize="x-small")
        ax.set(xlabel="images", ylabel=ylabel, title=phase)
    fig.suptitle(f"Throughput\n{machine_label(trials)}")
    fig.tight_layout()
    return fig


def published_comparison(trials, summary, speed, published, settings):
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
    ours = speed[(speed["phase"] == "decode") & (speed["variant"] == "processes")]
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


def residency(trials, summary, speed, published, settings):
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


PLOTTERS: dict[str, Callable] = {name: globals()[name] for name in FIGURES}


def draw(
    name: str,
    trials: pd.DataFrame,
    summary: pd.DataFrame,
    speed: pd.DataFrame,
    published: pd.DataFrame,
    out_stem: str | os.PathLike,
    settings: dict,
) -> list[Path]:
    """Draw figure ``name`` and save it as ``out_stem``.png and .svg."""
    sns.set_theme(
        style=settings.get("style", "whitegrid"), context=settings.get("context", "paper")
    )
    fig = PLOTTERS[name](trials, summary, speed, published, settings)
    return _save(fig, Path(out_stem), int(settings.get("dpi", 150)))
