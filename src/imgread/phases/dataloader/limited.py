"""page_cache ``limited`` in the DataLoader phase's outputs (docs/limited.md): the table of
every limited trial's epochs (``limited.csv``), the figure of rate and hit ratio against the
epoch beside the same cell's cold and warm trials, and what a pure LRU cache would hit."""

from __future__ import annotations

import ast
import json
import random
import re

import pandas as pd
from matplotlib.figure import Figure

from imgread.answer.figures.common import empty, machine_label, rows, subplots
from imgread.answer.tables import by_machine
from imgread.phases.dataloader.phase import TUNING

# the keys a limited trial shares with the cold and warm trials of its cell
CELL_KEYS = [
    "dataset",
    "variant",
    "decoder",
    "source",
    "batch_size",
    "pin_memory",
    "storage",
    "shard_mb",
    "ratio",
    *TUNING,
    "n_images",
    "workers",
]
EPOCH_COLUMNS = [
    "epoch",
    "seconds",
    "images_per_s",
    "bytes_requested",
    "bytes_read",
    "cache_hit_ratio",
    "cached_bytes",
    "own_bytes",
]
TRIAL_COLUMNS = [
    "repetition",
    "cache_share",
    "epochs",
    "memory_limit_bytes",
    "memory_limit_max_bytes",
    "calibration_peak_bytes",
    "dataset_bytes",
    "shuffle_seed",
]
COLUMNS = [
    *CELL_KEYS,
    *TRIAL_COLUMNS,
    *EPOCH_COLUMNS,
    "steady_images_per_s",
    "held_share",
    "lru_hit_ratio",
    "lru_hit_ratio_held",
    "cold_images_per_s",
    "warm_images_per_s",
]


def lru_hit_ratio(n: int, slots: int, epochs: int, trials: int = 200, seed: int = 0) -> list:
    """The mean hit ratio per epoch of a pure LRU cache of ``slots`` equal items over ``n``
    items read once per epoch, each epoch in a fresh uniform shuffle, from empty."""
    rng, hits = random.Random(seed), [0] * epochs
    for _ in range(trials):
        cache: dict[int, None] = {}  # insertion order = recency
        for e in range(epochs):
            order = list(range(n))
            rng.shuffle(order)
            for item in order:
                if item in cache:
                    hits[e] += 1
                    del cache[item]
                elif slots and len(cache) >= slots:
                    del cache[next(iter(cache))]
                if slots:
                    cache[item] = None
    return [h / (n * trials) for h in hits]


def epoch_list(value) -> list[dict]:
    """A record's ``epochs_measured``: the list itself (from the records) or its text (from
    trials.csv: Python's repr, NaN as ``nan``)."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(re.sub(r"\bnan\b", "None", value))


def _keys(d: pd.DataFrame) -> list[str]:
    return [k for k in CELL_KEYS if k in d]


def _rate_of(d: pd.DataFrame, state: str) -> dict[tuple, float]:
    """{cell: median images/s} of the cell's trials in page-cache ``state``."""
    keys, g = _keys(d), d[d["page_cache"] == state]
    if g.empty:
        return {}
    med = g.groupby(keys)["images_per_s"].median()
    return {k if isinstance(k, tuple) else (k,): float(v) for k, v in med.items()}


@by_machine
def limited_epochs(trials: pd.DataFrame, summary=None, speed=None) -> pd.DataFrame:
    """One row per limited trial and epoch: its rate, bytes asked for and read, hit ratio and
    the page cache its cgroup held at the epoch's end; its limit, steady rate, what a pure LRU
    cache of its share would hit, and the same cell's cold and warm rates (median)."""
    if "page_cache" not in trials or not (trials["page_cache"] == "limited").any():
        return pd.DataFrame(columns=COLUMNS)
    keys = _keys(trials)
    cold, warm = _rate_of(trials, "cold"), _rate_of(trials, "warm")
    out = []
    for _, t in trials[trials["page_cache"] == "limited"].iterrows():
        cell = tuple(t[k] for k in keys)
        epochs = epoch_list(t["epochs_measured"])
        n, share = int(t["n_images"]), float(t["cache_share"])
        # the share of the data the cache held (the margin is cache too): the LRU at both
        held = float(pd.Series([e.get("cached_bytes") for e in epochs]).median())
        held /= float(t["dataset_bytes"])
        lru = lru_hit_ratio(n, round(share * n), len(epochs), trials=20)
        lru_held = lru_hit_ratio(n, round(min(held, 1.0) * n), len(epochs), trials=20)
        for e, lru_e, lru_h in zip(epochs, lru, lru_held, strict=True):
            out.append(
                {
                    **{k: t[k] for k in keys},
                    **{c: t.get(c) for c in TRIAL_COLUMNS},
                    **{c: e.get(c) for c in EPOCH_COLUMNS},
                    "steady_images_per_s": t["steady_images_per_s"],
                    "held_share": held,
                    "lru_hit_ratio": lru_e,
                    "lru_hit_ratio_held": lru_h,
                    "cold_images_per_s": cold.get(cell, float("nan")),
                    "warm_images_per_s": warm.get(cell, float("nan")),
                }
            )
    return pd.DataFrame(out, columns=[*keys, *COLUMNS[len(CELL_KEYS) :]])


def dataloader_limited(trials, summary, speed, published, settings, phase, **_) -> Figure:
    """Rate and cache hit ratio against the epoch, per limited cell and share, with the same
    cell's cold and warm rates as lines and a pure LRU cache's hit ratio dashed."""
    d = rows(trials, phase)
    table = limited_epochs(d) if not d.empty else pd.DataFrame()
    if table.empty:
        return empty(
            (7, 4),
            "No page_cache limited trials: make limited (config/limited.yaml) runs them",
        )
    fig, (rate, hit) = subplots(1, 2, figsize=(12, 4.6))
    lines = table.groupby(["variant", "decoder", "workers", "n_images", "cache_share"])
    for (variant, decoder, workers, n, share), g in lines:
        name = f"{variant} {decoder} w{workers}, {n} images, cache {share}"
        per = g.groupby("epoch").median(numeric_only=True)
        (line,) = rate.plot(per.index, per["images_per_s"], marker="o", label=name)
        for state, style in (("cold", ":"), ("warm", "--")):
            value = per[f"{state}_images_per_s"].iloc[0]
            if value == value:
                rate.axhline(value, color=line.get_color(), ls=style, lw=1, label=f"{state}")
        hit.plot(per.index, per["cache_hit_ratio"], marker="o", color=line.get_color(), label=name)
        color = line.get_color()
        hit.plot(per.index, per["lru_hit_ratio"], ls="--", color=color, label=f"LRU at {share}")
        held = per["held_share"].iloc[0]
        hit.plot(
            per.index,
            per["lru_hit_ratio_held"],
            ls=":",
            color=color,
            label=f"LRU at {held:.2f} held",
        )
    rate.set(xlabel="epoch", ylabel="images/s", title="rate per epoch (cold, warm: lines)")
    hit.set(xlabel="epoch", ylabel="cache hit ratio", title="bytes not read from the device")
    hit.set_ylim(-0.05, 1.05)
    for ax in (rate, hit):
        ax.set_xticks(sorted(set(table["epoch"].astype(int))))
        ax.legend(fontsize=7)
    fig.suptitle(f"Data larger than memory: page_cache limited\n{machine_label(trials)}")
    fig.tight_layout()
    return fig
