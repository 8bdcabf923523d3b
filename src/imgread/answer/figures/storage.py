"""Figures of the storage profiles (imgread.storage): the load phase's rate against requests
in flight, one panel per profile, with the storage's own ceilings; and the DataLoader's and
the stream's rate on each storage side by side."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from imgread.answer.figures.common import empty, machine_label, rows, subplots

READER_ORDER = ("sequential", "threads", "asyncio", "processes")


def _profiles(d: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(d["storage"]))


def _panel_title(g: pd.DataFrame) -> str:
    name, kind = g["storage"].iloc[0], g["storage_kind"].iloc[0]
    parts = [f"{name} ({kind})"]
    lat, band = g["probe_latency_ms"].median(), g["probe_bandwidth_mb_per_s"].median()
    if kind == "http" and lat == lat:
        parts.append(f"probed {lat:.1f} ms")
    if band == band:
        parts.append(f"{band:.0f} MB/s")
    return ", ".join(parts)


def _median_line(ax, rates, **style) -> None:
    """The median of each group of ``rates`` (a grouped Series), bars from lowest to highest."""
    med, lo, hi = rates.median(), rates.min(), rates.max()
    ax.errorbar(
        med.index, med.to_numpy(), yerr=[med - lo, hi - med], marker="o", ms=4, capsize=2, **style
    )


def load_in_flight(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Images/s against requests in flight, a panel per storage profile, a line per reader;
    Little's law (in flight / probed latency) and the probed bandwidth drawn."""
    d = rows(trials, phase, storage=None)
    d = d[d["storage"] != "local"] if "storage" in d else d.iloc[0:0]
    if d.empty:
        return empty(
            (7, 4.5),
            "No load trials on a storage other than the local files:\n"
            "add storage: [...] to a load block (docs/storage.md)",
        )
    d = d.assign(in_flight=d["concurrency"].astype(int))
    profiles = _profiles(d)
    ncols = min(3, len(profiles))
    nrows = math.ceil(len(profiles) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    colors = dict(zip(READER_ORDER, ("black", "tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, name in zip(axes.flat, profiles, strict=False):
        g = d[d["storage"] == name]
        for variant in [v for v in READER_ORDER if v in set(g["variant"])]:
            rates = g[g["variant"] == variant].groupby("in_flight")["images_per_s"]
            _median_line(ax, rates, color=colors[variant], label=variant)
        xmax = max(2, int(g["in_flight"].max()))
        xs = np.geomspace(1, xmax * 1.3, 50)
        little = g["ceiling_little_images_per_s"] / g["in_flight"]
        if little.notna().any():
            ax.plot(xs, xs * little.median(), ls="--", c="gray", label="in flight / latency")
        band = g["ceiling_bandwidth_images_per_s"].median()
        if band == band:
            ax.axhline(band, ls=":", c="red", label="probed bandwidth")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        shown = [float(g["images_per_s"].min()), float(g["images_per_s"].max())]
        shown += [band] if band == band else []
        ax.set_ylim(max(min(shown) / 2, 0.1), max(shown) * 2.5)
        ax.set(title=_panel_title(g), xlabel="requests in flight", ylabel="images/s (cold)")
        ax.legend(fontsize="x-small", loc="upper left")
    for ax in list(axes.flat)[len(profiles) :]:
        ax.set_visible(False)
    mb = d["bytes"].sum() / d["images"].sum() / 1e6
    fig.suptitle(
        f"Reading {mb:.2f} MB images from each storage: rate against requests in flight\n"
        f"{machine_label(trials)}",
        y=1.02,
    )
    fig.tight_layout()
    return fig


def by_storage(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """A reading phase's images/s against workers on every storage it was measured on: a
    panel per storage (the local panel restricted to the keys the others were measured with),
    a line per variant; dashed, the storage's own ceiling (median over trials)."""
    d = rows(trials, phase, storage=None)
    remote = d[d["storage"] != "local"] if "storage" in d else d.iloc[0:0]
    if remote.empty:
        return empty(
            (7, 4.5),
            f"No {phase.name} trials on a storage other than the local files:\n"
            f"add storage: [...] to a {phase.name} block (docs/storage.md)",
        )
    keys = [p.name for p in phase.params if p.name != "storage"]
    same = remote[keys].drop_duplicates()
    local = d[d["storage"] == "local"].merge(same, on=keys)
    d = pd.concat([local, remote])
    profiles = _profiles(d)
    fig, axes = subplots(1, len(profiles), figsize=(4.4 * len(profiles), 3.8), squeeze=False)
    top = float(d["images_per_s"].max()) * 1.25
    for ax, name in zip(axes.flat, profiles, strict=True):
        g = d[d["storage"] == name]
        for variant, v in g.groupby("variant", sort=False):
            _median_line(ax, v.groupby("workers")["images_per_s"], label=variant)
        ceiling = g.groupby("workers")["ceiling_storage_images_per_s"].median().dropna()
        if not ceiling.empty:
            ax.plot(ceiling.index, ceiling.to_numpy(), ls="--", c="gray", label="storage ceiling")
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_ylim(0, top)
        title = "local (the files where they are)" if name == "local" else _panel_title(g)
        ax.set(title=title, xlabel="workers", ylabel="images/s")
        ax.legend(fontsize="x-small")
    shown = ", ".join(f"{k} {', '.join(map(str, same[k].unique()))}" for k in keys)
    fig.suptitle(
        f"{phase.name} by storage ({shown})\n{machine_label(trials)}", y=1.04, fontsize="small"
    )
    fig.tight_layout()
    return fig
