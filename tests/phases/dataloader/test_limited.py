"""The limited table (limited.csv) and figure on hand-made trials: one row per epoch, the same
cell's cold and warm medians, the LRU's hit ratio, and epochs_measured read back from CSV."""

from __future__ import annotations

import io

import pandas as pd

from imgread.phases.dataloader.limited import dataloader_limited, limited_epochs
from imgread.phases.registry import PHASES

CELL = dict(
    machine="local",
    phase="dataloader",
    dataset="ds",
    variant="torch",
    decoder="pillow",
    source="jpeg",
    batch_size="32",
    pin_memory="false",
    storage="local",
    shard_mb="0",
    ratio="1",
    allocator="default",
    normalize="item",
    collate="fresh",
    n_images=100,
    workers=2,
    physical_cores=2,
    logical_cores=2,
    cpu_model="cpu",
)


def _epoch(e, rate, read):
    return dict(
        epoch=e,
        seconds=100 / rate,
        images_per_s=rate,
        bytes_requested=1000,
        bytes_read=read,
        cache_hit_ratio=1 - read / 1000,
        images=100,
        cached_bytes=250,
        own_bytes=5000,
    )


def _trials() -> pd.DataFrame:
    limited = dict(
        CELL,
        page_cache="limited",
        cache_share="0.2",
        epochs="3",
        repetition=0,
        images_per_s=30.0,
        epochs_measured=[_epoch(1, 10.0, 1000), _epoch(2, 20.0, 900), _epoch(3, 30.0, 800)],
        steady_images_per_s=25.0,
        memory_limit_bytes=9000,
        calibration_peak_bytes=5000,
        dataset_bytes=1000,
        shuffle_seed=2028,
    )
    others = [
        dict(CELL, page_cache=state, repetition=r, images_per_s=rate)
        for state, rates in (("cold", (10.0, 12.0, 14.0)), ("warm", (40.0, 44.0)))
        for r, rate in enumerate(rates)
    ]
    return pd.DataFrame([limited, *others])


def test_one_row_per_epoch_with_the_cells_cold_and_warm_rates():
    t = limited_epochs(_trials())
    assert t["epoch"].tolist() == [1, 2, 3]
    assert t["cache_hit_ratio"].round(3).tolist() == [0.0, 0.1, 0.2]
    assert (t["cold_images_per_s"] == 12.0).all() and (t["warm_images_per_s"] == 42.0).all()
    assert (t["held_share"] == 0.25).all() and t["lru_hit_ratio"].iloc[0] == 0.0
    assert (t["steady_images_per_s"] == 25.0).all() and (t["memory_limit_bytes"] == 9000).all()


def test_the_table_reads_epochs_measured_back_from_trials_csv():
    csv = pd.read_csv(io.StringIO(_trials().to_csv(index=False)), dtype={"cache_share": str})
    t = limited_epochs(csv)
    assert t["bytes_read"].tolist() == [1000, 900, 800]


def test_no_limited_trials_is_an_empty_table_and_a_figure_that_says_so():
    trials = _trials()
    assert limited_epochs(trials[trials["page_cache"] != "limited"]).empty
    fig = dataloader_limited(trials, None, None, None, None, PHASES["dataloader"])
    assert len(fig.axes) == 2
