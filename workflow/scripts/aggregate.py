"""The tables, the recommendation, the scaling fits, the ceilings, study.json and the report's
text, all from the trial records."""

import json
import os
import sys

import pandas as pd

from imgread.answer.accelerators import profiles
from imgread.answer.analysis import (
    ceilings_table,
    flag_interference,
    load_records,
    phase_tables,
    render_table,
    scaling,
    speedup,
    summarize,
)
from imgread.answer.first_screen import accelerators_markdown, accelerators_rst, sentences
from imgread.answer.projections import project
from imgread.answer.recommend import markdown, recommend
from imgread.answer.study import describe, write_captions
from imgread.plan.storage import split_records
from imgread.storage.registry import parse_profiles
from imgread.trial.search_run import searches_table
from imgread.util import write_json_atomic, write_text_atomic

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
i, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
a = p.analysis
device = json.loads(open(i.device).read())
# Each dataset read cold against the device ceiling measured on its own files.
devices = {
    os.path.basename(os.path.dirname(path)): json.loads(open(path).read())["device_mb_per_s"]
    for path in i.devices
}
# Trials on storage this machine could not emulate wrote skip records: not measured.
measured, not_measured = split_records(list(i.trials))
trials, frames = load_records(measured)
trials = flag_interference(trials, a["max_interference"])
summary = summarize(trials, confidence=a["confidence"], device_mb_per_s=devices)
speed = speedup(
    trials, resamples=a["bootstrap_resamples"], confidence=a["confidence"], seed=a["seed"]
)
rec = recommend(trials, summary, tolerance=a["tolerance"], memory_budget=a.get("memory_budget"))
# The config is read, not a param: recording it must not make a rerun of the tables.
study = describe(
    trials,
    i.manifest,
    device=device,
    config=snakemake.config,  # noqa: F821
    manifests=list(i.manifests),
)
study["storage_skipped"] = list(dict.fromkeys([*study["storage_skipped"], *not_measured]))
# Each training row in accelerators (docs/accelerators.md), with what the searches measured
# (one row per search, docs/searches.md; read as the csv is, every cell a string).
fits = scaling(trials)
search_rows = searches_table(list(i.searches))
searches = search_rows.fillna("").astype(str) if len(search_rows) else None
acc = project(
    trials,
    profiles(p.accelerators),
    scaling=fits,
    storage=parse_profiles(snakemake.config["storage"]),  # noqa: F821
    devices=devices,
    searches=searches,
    tolerance=a["tolerance"],
)
opening = sentences(rec, acc, searches)
# The decoded caches built (one a decoder that refuses kept images did not build says why)
builds = [b for b in (json.loads(open(c).read()) for c in i.caches) if "refused" not in b]
tables = {
    out.trials: trials,
    out.frames: frames,
    out.summary: summary,
    out.speedup: speed,
    out.scaling: fits,
    out.accelerators: acc,
    out.recommendation: rec,
    out.ceilings: ceilings_table(summary, device),
    out.caches: pd.DataFrame(builds),
    out.searches: search_rows,
}
for path, df in tables.items():
    write_text_atomic(path, df.to_csv(index=False))
# Each phase's own tables, written where the rule declared them.
declared = {os.path.basename(p): p for p in [*out.phase_tables, *out.captioned_tables]}
for table, df in phase_tables(trials, summary, speed, study["dataset"]["name"]):
    write_text_atomic(declared[table.file], render_table(table, df))
md = markdown(rec, study, a["tolerance"], opening=opening, appendix=accelerators_markdown(acc))
write_text_atomic(out.recommendation_md, md)
write_json_atomic(out.study, study, indent=2)
write_captions(
    i.templates,
    [out.report_text, *out.captions],
    study,
    recommendation=rec,
    tolerance=a["tolerance"],
    opening=opening,
    appendix=accelerators_rst(acc),
)
print(f"aggregated {len(trials)} trials into {len(summary)} cells", file=sys.stderr)
