"""One timed trial: the grid cell comes from the output path's wildcards. On a storage
profile this machine cannot emulate (its storage_check said so), or for a variant whose library
is not installed here, a skip record, no time."""

from datetime import UTC, datetime

JOB_STARTED_AT = datetime.now(UTC).isoformat()  # before the imports: the job's own time

import os  # noqa: E402
import sys  # noqa: E402

from imgread.dataset.refused import cell_refusal  # noqa: E402
from imgread.dataset.stage import staged_manifest  # noqa: E402
from imgread.layout import parse_segment  # noqa: E402
from imgread.phases.registry import PHASES  # noqa: E402
from imgread.plan.storage import (  # noqa: E402
    line_skip_record,
    read_check,
    skip_record,
    variant_skip_record,
)
from imgread.trial.run import build_spec, run_trial, write_record  # noqa: E402
from imgread.util import exit_on_sigterm, write_json_atomic  # noqa: E402

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
exit_on_sigterm()  # Snakemake stops jobs with SIGTERM: clean up as on Ctrl-C
w, i, cache = snakemake.wildcards, snakemake.input, snakemake.params.cache  # noqa: F821
check = read_check(i.storage) if i.storage else None
if check is not None and check["missing"]:
    write_json_atomic(snakemake.output[0], skip_record(check), indent=2)  # noqa: F821
    print(f"skipped: {check['line']}", file=sys.stderr)
    sys.exit(0)
why = PHASES[w.phase].missing(w.variant)
skip = variant_skip_record(w.phase, w.variant, why) if why else None
decoder = parse_segment(w.params).get("decoder")
if skip is None and decoder:  # a kept image this decoder refuses (on_invalid keep)
    line = cell_refusal(i.manifest, int(w.n), decoder, w.dataset)
    skip = line_skip_record(line, phase=w.phase, decoder=decoder) if line else None
if skip is not None:
    write_json_atomic(snakemake.output[0], skip, indent=2)  # noqa: F821
    print(f"skipped: {skip['skipped']}", file=sys.stderr)
    sys.exit(0)
manifest, placement = i.manifest, "in place"
if cache.get("stage_dataset"):  # cold on a cluster: read a node-local copy
    manifest = staged_manifest(manifest, cache.get("stage_dir"))
    placement = f"node-local copy in {os.path.dirname(manifest)}"
spec = build_spec(
    manifest,
    w.phase,
    w.variant,
    w.n,
    w.w,
    w.r,
    parse_segment(w.params),
    inputs={
        "reference": i.reference or None,
        "cache_dir": os.path.dirname(i.cache) if i.cache else None,
    },
    cache={f"cache_{k}" if k == "method" else k: v for k, v in cache.items()},
    machine=dict(w.items()).get("machine") or os.environ.get("SLURM_JOB_PARTITION") or "local",
    placement=placement,
    storage=snakemake.params.storage,  # noqa: F821
    dataset=w.dataset,
    job_started_at=JOB_STARTED_AT,
)
record = run_trial(spec)
write_record(record, snakemake.output[0])  # noqa: F821
print(
    f"{spec.describe()}: {record.seconds:.4f} s, start-up {record.startup_seconds:.4f} s, "
    f"resident before {record.resident_fraction_before}",
    file=sys.stderr,
)
