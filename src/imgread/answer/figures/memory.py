"""Memory against workers, a figure every phase declares under a name of its own (for example
``"memory_<phase>": "imgread.answer.figures.memory:memory_vs_workers"`` in ``Phase.figures``): the
whole trial's peak memory (the process and all its workers, counted once;
imgread.instruments.memory) and each worker's share of what they added, one line per strategy."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from imgread.answer.figures.common import empty, log2_workers, machine_label, rows, subplots

MB = 1e6


def strategies(d: pd.DataFrame, phase) -> pd.Series:
    """Each row's line: the variant, the phase's keys that vary in ``d``, the machine where
    several ran, and the largest n of that line (the one drawn)."""
    varying = [p.name for p in phase.params if p.name in d and d[p.name].nunique() > 1]
    if "machine" in d and d["machine"].nunique() > 1:
        varying.append("machine")
    text = d["variant"].astype(str)
    for key in varying:
        text = text + ", " + d[key].astype(str)
    return text


def _at_largest_n(d: pd.DataFrame) -> pd.DataFrame:
    """Each line's rows at its largest n, the line named with that n."""
    largest = d.groupby("line")["n_images"].transform("max")
    d = d[d["n_images"] == largest].copy()
    d["line"] = d["line"] + ", n=" + d["n_images"].astype(str)
    return d


MAX_LINES = 12  # more would make a legend nobody can match to its points


def _readable(d: pd.DataFrame, phase) -> tuple[pd.DataFrame, int]:
    """At most MAX_LINES lines: where there are more, the curves (two or more worker counts)
    first, then the baseline variant's points; and how many lines were left out."""
    lines = sorted(d["line"].unique())
    if len(lines) <= MAX_LINES:
        return d, 0
    counts = d.groupby("line")["workers"].nunique()
    baseline = d[d["variant"] == phase.baseline[0]]["line"].unique()
    curves = [x for x in lines if counts[x] > 1]
    keep = (curves + [x for x in lines if x in baseline and x not in curves])[:MAX_LINES]
    return d[d["line"].isin(keep)], len(lines) - len(keep)


def _method(d: pd.DataFrame) -> str:
    """How the memory was measured, for the title."""
    out = []
    for method, g in d.groupby("memory_method"):
        if method == "pss-sampled" and "memory_sample_period_s" in g:
            period = pd.to_numeric(g["memory_sample_period_s"]).median()
            out.append(f"PSS sampled every {period * 1e3:.0f} ms (median)")
        else:
            out.append(str(method))
    return "; ".join(out)


def _panel(ax, d: pd.DataFrame, column: str, palette: dict) -> None:
    """Median over repetitions against workers per line, the range as error bars."""
    for line, g in d.groupby("line", sort=True):
        m = pd.to_numeric(g[column]).groupby(g["workers"]).agg(["median", "min", "max"])
        m = m.dropna() / MB
        if m.empty:
            continue
        ax.errorbar(
            m.index,
            m["median"],
            yerr=[m["median"] - m["min"], m["max"] - m["median"]],
            marker="o",
            capsize=3,
            c=palette[line],
            label=line,
        )
    log2_workers(ax, sorted(d["workers"].unique()))
    ax.set_ylim(bottom=0)


def memory_vs_workers(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Peak memory of the whole trial and per worker against workers, for ``phase``."""
    d = rows(trials, phase)
    if d.empty or "peak_memory_bytes" not in d or d["peak_memory_bytes"].isna().all():
        return empty((10, 4.5), f"no memory measured in the {phase.name} trials of this study")
    d = d[d["peak_memory_bytes"].notna()].assign(line=lambda x: strategies(x, phase))
    d = _at_largest_n(d)
    d, left_out = _readable(d, phase)
    names = sorted(d["line"].unique())
    colours = sns.color_palette("husl" if len(names) > 10 else "tab10", len(names))
    palette = dict(zip(names, colours, strict=True))
    fig, (peak, share) = subplots(1, 2, figsize=(11, 4.5))
    _panel(peak, d, "peak_memory_bytes", palette)
    _panel(share, d, "memory_per_worker_bytes", palette)
    peak.set(xlabel="workers", ylabel="peak memory of the trial (MB)")
    share.set(xlabel="workers", ylabel="(peak - trial process before workers) / workers (MB)")
    fig.suptitle(
        f"Memory of the {phase.name} phase: {_method(d)}\n{machine_label(d)}", fontsize="medium"
    )
    share.legend(
        title="strategy, at its largest n"
        + (f"\n({left_out} single-point settings left out: trials.csv)" if left_out else ""),
        fontsize="x-small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1),  # beside the panel, never over a point
    )
    return fig
