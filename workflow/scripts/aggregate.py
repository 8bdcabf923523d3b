"""The tables, the recommendation, the scaling fits, the ceilings, study.json and the report's
text, all from the trial records."""

import json
import sys

import pandas as pd

from imgread.analysis import (
    ceilings_table,
    dataloader_workers,
    decode_table,
    flag_interference,
    load_records,
    load_table,
    markdown_table,
    pipeline_table,
    scaling,
    speedup,
    stream_producers,
    summarize,
)
from imgread.recommend import markdown, recommend
from imgread.study import describe, write_captions
from imgread.util import write_text_atomic

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
i, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
a = p.analysis
device = json.loads(open(i.device).read())
trials, frames = load_records(i.trials)
trials = flag_interference(trials, a["max_interference"])
summary = summarize(trials, confidence=a["confidence"], device_mb_per_s=device["device_mb_per_s"])
speed = speedup(
    trials, resamples=a["bootstrap_resamples"], confidence=a["confidence"], seed=a["seed"]
)
rec = recommend(trials, summary, tolerance=a["tolerance"])
# The config is read, not a param: recording it must not make a rerun of the tables.
study = describe(trials, i.manifest, device=device, config=snakemake.config)  # noqa: F821
tables = {
    out.trials: trials,
    out.frames: frames,
    out.summary: summary,
    out.speedup: speed,
    out.loader_workers: dataloader_workers(trials),
    out.stream_producers: stream_producers(trials),
    out.scaling: scaling(trials),
    out.recommendation: rec,
    out.ceilings: ceilings_table(summary, device),
    out.caches: pd.DataFrame([json.loads(open(c).read()) for c in i.caches]),
}
for path, df in tables.items():
    write_text_atomic(path, df.to_csv(index=False))
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
write_text_atomic(out.recommendation_md, markdown(rec, study, tolerance=a["tolerance"]))
write_text_atomic(out.study, json.dumps(study, indent=2) + "\n")
write_captions(
    i.templates,
    [out.report_text, *out.captions],
    study,
    recommendation=rec,
    tolerance=a["tolerance"],
)
print(f"aggregated {len(trials)} trials into {len(summary)} cells", file=sys.stderr)
