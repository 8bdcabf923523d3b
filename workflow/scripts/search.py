"""One search of the config (imgread.plan.searches): every probe a whole trial (build_spec +
run_trial, as the trial rule's), its record in results/searches/<name>/probe-<k>.json, the
summary in results/searches/<name>.json; one line per probe in the log and on stderr. On a
storage profile this machine cannot emulate, or for a variant whose library is not
installed here, a summary saying so, and no probe."""

from datetime import UTC, datetime

JOB_STARTED_AT = datetime.now(UTC).isoformat()  # before the imports: the job's own time

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from imgread.dataset.refused import cell_refusal  # noqa: E402
from imgread.phases.registry import PHASES  # noqa: E402
from imgread.plan.searches import phase_param, searches  # noqa: E402
from imgread.plan.storage import read_check  # noqa: E402
from imgread.trial.run import build_spec, run_trial, write_record  # noqa: E402
from imgread.trial.search_run import run_search  # noqa: E402
from imgread.util import exit_on_sigterm, write_json_atomic  # noqa: E402

console = sys.stderr
sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
exit_on_sigterm()
w, i, cache = snakemake.wildcards, snakemake.input, snakemake.params.cache  # noqa: F821
config = snakemake.config  # noqa: F821
search = {s.name: s for s in searches(config)}[w.name]
phase = PHASES[search.phase]
key = phase.search_keys[search.key]
param = phase_param(phase, search.key)
out = Path(snakemake.output[0])  # noqa: F821
probes_dir = out.with_suffix("")
probes_dir.mkdir(parents=True, exist_ok=True)
for old in probes_dir.glob("probe-*.json"):  # a rerun's probes are its own
    old.unlink()
summary = {
    "name": search.name,
    "phase": search.phase,
    "variant": search.variant,
    "dataset": search.dataset,
    "storage": search.storage,
    "workers": search.workers,
    "n": search.n,
    "settings": search.settings,
    "key": search.key,
    "max_probes": search.max_probes,
}


def log(line: str) -> None:
    """A progress line: in the job's log and on the console."""
    for stream in (sys.stderr, console):
        print(line, file=stream, flush=True)


def to_value(value: float) -> float:
    """The value a trial can run at: a whole-number key rounded (at least its minimum)."""
    if param.choices is None:
        return float(max(param.minimum, round(value)))
    return float(value)


def trial(value: float, k: int) -> dict:
    """Probe k at ``value``: one whole trial, its record kept beside the summary."""
    text = param.check(int(value)) if param.choices is None else str(value)
    spec = build_spec(
        i.manifest,
        search.phase,
        search.variant,
        search.n,
        search.workers,
        k - 1,  # the probe's number as its repetition: each record names its probe
        search.probe_params(text),
        inputs={
            "reference": i.reference or None,
            "cache_dir": os.path.dirname(i.cache) if i.cache else None,
        },
        cache={f"cache_{k_}" if k_ == "method" else k_: v for k_, v in cache.items()},
        machine=os.environ.get("SLURM_JOB_PARTITION") or "local",
        placement="in place",
        storage=snakemake.params.storage,  # noqa: F821
        dataset=search.dataset,
        job_started_at=JOB_STARTED_AT,
    )
    record = run_trial(spec)
    write_record(record, probes_dir / f"probe-{k}.json")
    return record.to_dict()


check = read_check(i.storage) if i.storage else None
why = check["line"] if check is not None and check["missing"] else phase.missing(search.variant)
decoder = dict(search.params).get("decoder")
if not why and decoder:  # a kept image this decoder refuses (on_invalid keep), as a trial's
    why = cell_refusal(i.manifest, search.n, decoder, search.dataset)
if why:
    summary.update(skipped=why, best=None, probes=0, probe_values=[], goal=key.describe)
    log(f"search {search.name} skipped: {why}")
else:
    label = f"search {search.name}"
    summary.update(
        run_search(key, search.max_probes, trial, to_value=to_value, log=log, label=label)
    )
summary["scale"] = phase.search_scale(search.key, summary.get("best"), config)
write_json_atomic(out, summary, indent=2)
log(
    f"search {search.name}: best {search.key}={summary.get('best')} "
    f"({summary.get('probes')} probes){'; ' + summary['scale']['line'] if summary['scale'] else ''}"
)
