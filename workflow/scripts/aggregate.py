"""trials.csv, summary.csv, speedup.csv and the study's two tables as Markdown."""

import json
import sys

import imgread_src  # noqa: F401 (puts this checkout's src/ on sys.path)
import pandas as pd

from imgread.analysis import (
    dataloader_workers,
    decode_table,
    load_records,
    load_table,
    markdown_table,
    pipeline_table,
    speedup,
    stream_producers,
    summarize,
)
from imgread.util import write_text_atomic

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
out, a = snakemake.output, snakemake.params.analysis  # noqa: F821
trials, frames = load_records(snakemake.input.trials)  # noqa: F821
summary = summarize(trials, confidence=a["confidence"])
speed = speedup(
    trials, resamples=a["bootstrap_resamples"], confidence=a["confidence"], seed=a["seed"]
)
write_text_atomic(out.trials, trials.to_csv(index=False))
write_text_atomic(out.frames, frames.to_csv(index=False))
write_text_atomic(out.summary, summary.to_csv(index=False))
write_text_atomic(out.speedup, speed.to_csv(index=False))
write_text_atomic(
    out.load_md,
    "# Load: sequential vs asyncio (mean of repetitions)\n\n"
    + markdown_table(load_table(summary, speed)),
)
write_text_atomic(
    out.decode_md,
    "# Decode: sequential vs processes (mean of repetitions)\n\n"
    + markdown_table(decode_table(summary, speed)),
)
write_text_atomic(
    out.pipeline_md,
    "# Decode like a real pipeline: decoder x output x delivery (median of repetitions)\n\n"
    "megapixels/s counts the source image's pixels; speedup is over the same decoder, output "
    "and delivery decoded sequentially; ceiling_fraction = rate / (the same decoder and "
    "output's sequential rate with the pixels discarded x min(workers, physical cores)): what "
    "the cores allow, so the cost of handing the pixels over shows.\n\n"
    + markdown_table(pipeline_table(trials, speed)),
)
write_text_atomic(out.loader_workers, dataloader_workers(trials).to_csv(index=False))
write_text_atomic(out.stream_producers, stream_producers(trials).to_csv(index=False))
caches = pd.DataFrame([json.loads(open(p).read()) for p in snakemake.input.caches])  # noqa: F821
write_text_atomic(out.caches, caches.to_csv(index=False))
print(f"aggregated {len(trials)} trials into {len(summary)} cells", file=sys.stderr)
