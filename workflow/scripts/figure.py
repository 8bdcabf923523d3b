"""Draw one figure (params.figure) from the tables, and write its caption from the records."""

import json
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from imgread.answer.figures.draw import draw
from imgread.answer.study import write_captions


def _table(path: str) -> pd.DataFrame | None:
    """The CSV at ``path``; None where the file is empty (nothing of that kind was measured)."""
    return pd.read_csv(path) if Path(path).read_text().strip() else None


# The built-in figures need no backend; a plug-in's figure drawn with pyplot renders to files.
matplotlib.use("Agg")
sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
i, p, o = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
study = json.loads(Path(i.study).read_text())
draw(
    p.figure,
    trials=pd.read_csv(i.trials),
    summary=pd.read_csv(i.summary),
    speed=pd.read_csv(i.speedup),
    published=pd.read_csv(i.published),
    out_stem=o.png.rsplit(".", 1)[0],
    settings={**p.settings, "study_dataset": study["dataset"]["name"]},
    caches=_table(i.caches),
    frames=pd.read_csv(i.frames),
    scaling=pd.read_csv(i.scaling),
    device=json.loads(Path(i.device).read_text()),
)
write_captions([i.template], [o.caption], study)
