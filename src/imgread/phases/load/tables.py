"""The load phase's table: the study's Table 1."""

from __future__ import annotations

import pandas as pd

from imgread.answer.tables import by_machine


@by_machine
def load_table(trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 1: sequential vs asyncio load time per n, with speedup (asyncio as
    the study ran it: every read at once, in_flight 0)."""
    summary, speed = (f[f["in_flight"].astype(str) == "0"] for f in (summary, speed))
    seq = summary[summary["variant"] == "sequential"].set_index("n_images")["mean_seconds"]
    aio = summary[summary["variant"] == "asyncio"].set_index("n_images")["mean_seconds"]
    sp = speed[speed["variant"] == "asyncio"].set_index("n_images")["speedup"]
    out = pd.DataFrame({"sequential (s)": seq, "asyncio (s)": aio, "speedup": sp}).dropna(how="all")
    out.index.name = "images"
    return out.reset_index()


@by_machine
def storage_table(trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """Per storage profile and number of images: sequential's rate, the best reader and its
    requests in flight, its rate and fraction of the storage's ceiling, and the fewest
    requests in flight at which asyncio and threads first reach 2x sequential."""
    rows = []
    rate = "median_images_per_s"
    for (storage, n), g in summary.groupby(["storage", "n_images"], sort=False):
        seq = g[g["variant"] == "sequential"][rate]
        base = float(seq.iloc[0]) if len(seq) else float("nan")
        best = g.loc[g[rate].idxmax()]
        row = {
            "storage": storage,
            "images": int(n),
            "sequential images/s": base,
            "best": best["variant"],
            "in flight": int(best["concurrency"]),
            "images/s": float(best[rate]),
            "of ceiling": float(best["ceiling_fraction"]),
        }
        for variant in ("asyncio", "threads"):
            v = g[(g["variant"] == variant) & (g[rate] >= 2 * base)]
            row[f"{variant}: 2x sequential at"] = int(v["concurrency"].min()) if len(v) else "never"
        rows.append(row)
    return pd.DataFrame(rows)
