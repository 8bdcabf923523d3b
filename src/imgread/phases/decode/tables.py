"""The decode phase's tables: the study's Table 2 and the pipeline table, and the rows each
reads (which the figures read too)."""

from __future__ import annotations

import pandas as pd

from imgread.answer.keys import CELL
from imgread.answer.tables import by_machine

PHASE = "decode"
STUDY_DECODE = {"decoder": "pillow", "output": "full", "delivery": "discard"}


def study_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Decode rows measured the study's way (Pillow, full size, pixels discarded). The phase
    is checked too: the figures pass every phase's rows."""
    mask = df["phase"] == PHASE
    for k, v in STUDY_DECODE.items():
        mask &= df[k] == v
    return df[mask]


def pipeline_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Decode rows at every n where more than the study's way was measured."""
    d = df[df["phase"] == PHASE]
    other = d[~d.index.isin(study_cells(d).index)]
    return d[d["n_images"].isin(set(other["n_images"]))]


@by_machine
def decode_table(trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 2: sequential vs processes decode per n and workers.

    Times and speedup include the pool start-up (total_seconds), as the study timed them;
    the columns without start-up are beside them.
    """
    s = study_cells(summary)
    seq = s[s["variant"] == "sequential"].set_index("n_images")["mean_seconds"]
    proc = s[s["variant"] == "processes"]
    sp = study_cells(speed)
    sp = sp[sp["variant"] == "processes"]
    merged = proc.merge(sp, on=CELL)
    out = pd.DataFrame(
        {
            "images": merged["n_images"],
            "processes": merged["workers"],
            "sequential (s)": merged["n_images"].map(seq),
            "parallel (s)": merged["mean_total_seconds"],
            "speedup": merged["speedup_total"],
            "efficiency": merged["efficiency_total"],
            "parallel, no start-up (s)": merged["mean_seconds"],
            "speedup, no start-up": merged["speedup"],
        }
    )
    return out.sort_values(["images", "processes"]).reset_index(drop=True)


@by_machine
def pipeline_table(
    trials: pd.DataFrame, summary: pd.DataFrame, speed: pd.DataFrame
) -> pd.DataFrame:
    """Per decoder, output, delivery, variant and workers: median images/s and megapixels/s,
    speedup over the same decoder's sequential decode, and the fraction of the core ceiling."""
    d = pipeline_cells(trials)
    keys = ["n_images", "decoder", "output", "delivery", "variant", "workers"]
    rates = (
        d.groupby(keys)
        .agg(
            repetitions=("seconds", "size"),
            median_images_per_s=("images_per_s", "median"),
            median_megapixels_per_s=("megapixels_per_s", "median"),
            median_startup_seconds=("startup_seconds", "median"),
        )
        .reset_index()
    )
    sp = speed[keys + ["speedup", "ceiling_fraction"]]
    out = rates.merge(sp, on=keys, how="left")
    return out.sort_values(keys).reset_index(drop=True)
