"""The load phase's table: the study's Table 1."""

from __future__ import annotations

import pandas as pd

from imgread.tables import by_machine


@by_machine
def load_table(trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 1: sequential vs asyncio load time per n, with speedup."""
    seq = summary[summary["variant"] == "sequential"].set_index("n_images")["mean_seconds"]
    aio = summary[summary["variant"] == "asyncio"].set_index("n_images")["mean_seconds"]
    sp = speed[speed["variant"] == "asyncio"].set_index("n_images")["speedup"]
    out = pd.DataFrame({"sequential (s)": seq, "asyncio (s)": aio, "speedup": sp}).dropna(how="all")
    out.index.name = "images"
    return out.reset_index()
