"""One timed trial: the grid cell comes from the output path's wildcards."""

from datetime import UTC, datetime

JOB_STARTED_AT = datetime.now(UTC).isoformat()  # before the imports: the job's own time

import os  # noqa: E402
import sys  # noqa: E402

import imgread_src  # noqa: E402, F401 (puts this checkout's src/ on sys.path)

from imgread.phases import PHASES, parse_segment  # noqa: E402
from imgread.stage import staged_manifest  # noqa: E402
from imgread.trial import TrialSpec, run_trial, write_record  # noqa: E402
from imgread.util import exit_on_sigterm  # noqa: E402

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
exit_on_sigterm()  # Snakemake stops jobs with SIGTERM: clean up as on Ctrl-C
w, cache_settings = snakemake.wildcards, snakemake.params.cache  # noqa: F821
reference = snakemake.input.reference  # noqa: F821
cache = snakemake.input.cache  # noqa: F821
manifest, storage = snakemake.input.manifest, "in place"  # noqa: F821
if cache_settings.get("stage_dataset"):  # cold on a cluster: read a node-local copy
    manifest = staged_manifest(manifest, cache_settings.get("stage_dir"))
    storage = f"node-local copy in {os.path.dirname(manifest)}"
wildcards = dict(w.items())
spec = TrialSpec(
    manifest=str(manifest),
    machine=wildcards.get("machine") or os.environ.get("SLURM_JOB_PARTITION") or "local",
    storage=storage,
    job_started_at=JOB_STARTED_AT,
    phase=w.phase,
    variant=w.variant,
    n_images=int(w.n),
    workers=int(w.w),
    repetition=int(w.r),
    params=parse_segment(w.params),
    reference=str(reference) if reference else None,
    cache_dir=str(cache).rsplit("/", 1)[0] if cache else None,
    **(
        {
            "cache_method": cache_settings["method"],
            "max_resident_fraction": cache_settings["max_resident_fraction"],
            "saturate_bytes": cache_settings["saturate_bytes"],
            "saturate_dir": cache_settings["saturate_dir"],
        }
        if PHASES[w.phase].page_cache(PHASES[w.phase].resolve(parse_segment(w.params))) == "cold"
        else {}
    ),
)
record = run_trial(spec)
write_record(record, snakemake.output[0])  # noqa: F821
print(
    f"{spec.describe()}: {record.seconds:.4f} s, start-up {record.startup_seconds:.4f} s, "
    f"resident before {record.resident_fraction_before}",
    file=sys.stderr,
)
