"""Helpers of the figures that compare datasets (drawn from every dataset's rows:
``every_dataset``): loose files against each shard size, and the bars and panels they share.
Each phase draws its own such figure (load_shards, dataloader_shards, decode_encodings)."""

from __future__ import annotations

import math

import pandas as pd

from imgread.answer.figures.common import subplots

PACKING_COLORS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def every_dataset(function):
    function.every_dataset = True
    return function


def packing(mb) -> str:
    mb = int(mb)
    return "loose files" if mb == 0 else f"{mb} MB shards"


def shard_datasets(d: pd.DataFrame) -> pd.DataFrame:
    """The rows of the datasets some of whose cells read shards."""
    if "shard_mb" not in d:
        return d.iloc[0:0]
    packed = set(d.loc[d["shard_mb"].astype(str) != "0", "dataset"])
    return d[d["dataset"].isin(packed)]


def panels(n: int, width: float = 4.6, height: float = 3.8):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    return subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def retried(g) -> str:
    """A panel title's second line where its trials retried reads (a failing server): the
    rates include the retries and their backoff."""
    n = int(g["retries"].fillna(0).sum()) if "retries" in g else 0
    return f"\n{n} reads retried (a failing server)" if n else ""
