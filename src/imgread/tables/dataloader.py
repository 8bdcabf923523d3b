"""The DataLoader phase's table: the best num_workers per line, and where more start to hurt."""

from __future__ import annotations

import pandas as pd

from imgread.tables import by_machine

LOADER_LINE = ["decoder", "source", "batch_size", "page_cache", "pin_memory", "n_images"]
HURT_MARGIN = 0.05  # a worker count "hurts" when its median rate is this much below the best
COLUMNS = [
    *LOADER_LINE,
    "images_per_s_w1",
    "best_workers",
    "best_images_per_s",
    "physical_cores",
    "best_over_cores_x_w1",
    "hurts_from_workers",
]


@by_machine
def dataloader_workers(
    trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame
) -> pd.DataFrame:
    """Per DataLoader line (decoder, source, ...): the num_workers=1 rate, the best num_workers
    and its rate, the best over the goal (num_workers=1 rate x physical cores), and the first
    num_workers above the best whose median rate is more than 5 % below it (where more workers
    start to hurt)."""
    rows = []
    for key, g in trials.groupby(LOADER_LINE, sort=True):
        med = g.groupby("workers")["images_per_s"].median().sort_index()
        cores = int(g["physical_cores"].max())
        best_w = int(med.idxmax())
        worse = [w for w in med.index if w > best_w and med[w] < (1 - HURT_MARGIN) * med[best_w]]
        w1 = float(med.get(1, float("nan")))
        rows.append(
            dict(
                zip(LOADER_LINE, key, strict=True),
                images_per_s_w1=w1,
                best_workers=best_w,
                best_images_per_s=float(med[best_w]),
                physical_cores=cores,
                best_over_cores_x_w1=float(med[best_w]) / (w1 * cores),
                hurts_from_workers=int(worse[0]) if worse else -1,
            )
        )
    return pd.DataFrame(rows, columns=COLUMNS)
