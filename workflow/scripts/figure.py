"""Draw one figure (params.figure) from the tables."""

import sys

import imgread_src  # noqa: F401 (puts this checkout's src/ on sys.path)
import pandas as pd

from imgread.figures import draw

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
i, p = snakemake.input, snakemake.params  # noqa: F821
draw(
    p.figure,
    trials=pd.read_csv(i.trials),
    summary=pd.read_csv(i.summary),
    speed=pd.read_csv(i.speedup),
    published=pd.read_csv(i.published),
    out_stem=snakemake.output.png.rsplit(".", 1)[0],  # noqa: F821
    settings=p.settings,
    caches=pd.read_csv(i.caches) if open(i.caches).read().strip() else None,
    frames=pd.read_csv(i.frames),
)
