"""The DataLoader phase's table: the best num_workers per line, and where more start to hurt."""

from __future__ import annotations

import pandas as pd

from imgread.answer.tables import by_machine
from imgread.phases.dataloader.phase import TUNING

# the pipeline first: the libraries' lines must never share one line's medians
LOADER_LINE = ["variant", "decoder", "source", "batch_size", "page_cache", "pin_memory", "n_images"]
# Keys a line is told apart by where the trials have them (later grid keys, other datasets and
# storage): without them, a block's before and after settings would share one line's medians.
LATER_KEYS = ["dataset", "storage", "shard_mb", "ratio", "client", *TUNING]
HURT_MARGIN = 0.05  # a worker count "hurts" when its median rate is this much below the best
COLUMNS = [
    *LOADER_LINE,
    "images_per_s_w0",
    "images_per_s_w1",
    "best_workers",
    "best_images_per_s",
    "physical_cores",
    "best_over_cores_x_w1",
    "best_over_cores_x_w0",
    "hurts_from_workers",
]


@by_machine
def dataloader_workers(
    trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame
) -> pd.DataFrame:
    """Per DataLoader line (pipeline, decoder, source, ..., and the later keys the trials have): the
    num_workers=0 and 1 rates, the best num_workers and its rate, the best over (num_workers=1
    rate x physical cores), the best with worker processes (num_workers >= 1) over
    (num_workers=0 rate x physical cores: the in-process rate, docs/dataloader.md's goal), and
    the first num_workers above the best whose median rate is more than 5 % below it (where
    more workers start to hurt)."""
    line = [*LOADER_LINE, *(k for k in LATER_KEYS if k in trials)]
    rows = []
    for key, g in trials.groupby(line, sort=True):
        med = g.groupby("workers")["images_per_s"].median().sort_index()
        cores = int(g["physical_cores"].max())
        best_w = int(med.idxmax())
        loaders = med[med.index > 0]  # the goal's numerator: the best with worker processes
        best_loader = float(loaders.max()) if not loaders.empty else float("nan")
        worse = [w for w in med.index if w > best_w and med[w] < (1 - HURT_MARGIN) * med[best_w]]
        w0 = float(med.get(0, float("nan")))
        w1 = float(med.get(1, float("nan")))
        rows.append(
            dict(
                zip(line, key, strict=True),
                images_per_s_w0=w0,
                images_per_s_w1=w1,
                best_workers=best_w,
                best_images_per_s=float(med[best_w]),
                physical_cores=cores,
                best_over_cores_x_w1=float(med[best_w]) / (w1 * cores),
                best_over_cores_x_w0=best_loader / (w0 * cores),
                hurts_from_workers=int(worse[0]) if worse else -1,
            )
        )
    return pd.DataFrame(rows, columns=[*line, *COLUMNS[len(LOADER_LINE) :]])
