"""Draw one figure (params.figure) from the tables, and write its caption from the records."""

import json
import sys

import pandas as pd

from imgread.figures import draw
from imgread.study import write_captions

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
i, p, o = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
study = json.loads(open(i.study).read())
draw(
    p.figure,
    trials=pd.read_csv(i.trials),
    summary=pd.read_csv(i.summary),
    speed=pd.read_csv(i.speedup),
    published=pd.read_csv(i.published),
    out_stem=o.png.rsplit(".", 1)[0],
    settings=p.settings,
    caches=pd.read_csv(i.caches) if open(i.caches).read().strip() else None,
    frames=pd.read_csv(i.frames),
    scaling=pd.read_csv(i.scaling),
    device=json.loads(open(i.device).read()),
)
write_captions([i.template], [o.caption], study)
