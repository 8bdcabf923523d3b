# Helpers shared by the rules: config validation, the trial grid, paths and params.
# Phases are never named here: each rule asks the phase registry (imgread.phases.registry).
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from snakemake.scheduling.job_scheduler import JobScheduler
from snakemake.utils import min_version, validate

# How the workflow finds the package, the one way, the same in the venv, a conda env from
# envs/ and on a cluster node: this checkout's src/ first on PYTHONPATH, for this parse and
# every job it starts (a conda env cannot install the checkout: Snakemake copies its yaml).
SRC = str(Path(workflow.basedir) / "src")
# (set, not required: so no `envvars:` directive)
_PATHS = os.environ.get("PYTHONPATH", "").split(os.pathsep)
os.environ.update(
    PYTHONPATH=os.pathsep.join([SRC, *(p for p in _PATHS if p and p != SRC)])
)
sys.path.insert(0, SRC)

from imgread.config import (
    check_config,
    check_schema,
    dataset_rule_settings,
    datasets as config_datasets,
    normalize_datasets,
    primary_dataset,
    schema_file,
    skipped_cells,
    skipped_storage,
    storage_of,
    trial_grid,
)
from imgread.storage import registry as storage_registry
from imgread.layout import MACHINE_TEMPLATE, TRIAL_TEMPLATE, parse_segment
from imgread.phases.registry import FIGURES, PHASES
from imgread.answer.study import config_digest

min_version("9.0")


# Snakemake 9's job-rate limiter (--max-jobs-per-timespan, default 100/1s) re-arms a one-second
# timer on every scheduling pass, the passes its own timers start included: each finished job
# adds a chain of timers, and after N jobs the scheduler re-selects among the ready jobs N times
# a second. With hundreds of trials it holds a core while trials are timed (measured here: 60 %
# of a core after 30 jobs, so every trial on 2 cores counted as disturbed). One pending
# re-evaluation is all the limiter needs; a job's end wakes the scheduler anyway.
def _one_reevaluation(self, delay):
    pending = getattr(self, "_imgread_reevaluation", None)
    if pending is not None and pending.is_alive():
        return
    timer = threading.Timer(delay, self._open_jobs.release)
    timer.daemon = True  # never holds the run's exit
    timer.start()
    self._imgread_reevaluation = timer


JobScheduler._schedule_reevalutation = _one_reevaluation


# One clear line for a bad value, before any job: the schema (with our wording), then
# Snakemake's validate to fill in defaults, then the checks a schema cannot express.
SCHEMA = Path(workflow.basedir) / "config/schema.yaml"
CONVERTED = normalize_datasets(config)  # an old single `dataset:` becomes a list of one
check_schema(config, SCHEMA)
validate(config, schema_file(SCHEMA), set_default=True)
check_config(config)

DATASETS = config_datasets(config)  # by name, in the config's order
DATASET = primary_dataset(config)  # the study's: the first
# Every file of a dataset lives under results/datasets/<name>/ (the {dataset} wildcard).
DATASET_OF = "results/datasets/{dataset}"
MANIFEST_OF = f"{DATASET_OF}/manifest.csv"
VERIFIED_OF = f"{DATASET_OF}/verified.ok"
DATASET_DIR = f"results/datasets/{DATASET}"
MANIFEST = f"{DATASET_DIR}/manifest.csv"
# The device ceiling is measured on the study's dataset (its MB/s is the device's).
DEVICE_CEILING = f"{DATASET_DIR}/device_ceiling.json"
# The report's own text (the recommendation first) is written from the records by aggregate.
REPORT_TEXT = "results/report/workflow.rst"
TRIALS_DIR = "results/trials"  # then <dataset>/ (imgread.config.Cell.path)
# Each phase's own tables (Phase.tables): plain files, and report() tables with a caption.
PHASE_TABLES = [t for ph in PHASES.values() for t in ph.tables]
CAPTIONED_TABLES = [t.stem for t in PHASE_TABLES if t.caption]
TABLES = [
    "results/tables/trials.csv",
    "results/tables/frames.csv",
    "results/tables/summary.csv",
    "results/tables/speedup.csv",
    *(f"results/tables/{t.file}" for t in PHASE_TABLES),
    "results/tables/decoded_cache.csv",
    "results/tables/scaling.csv",
    "results/tables/recommendation.csv",
    "results/tables/recommendation.md",
    "results/tables/ceilings.csv",
    "results/tables/study.json",
]
FIGURE_NAMES = list(FIGURES)  # every registered phase's figures
FIGURE_FILES = [
    f"results/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "svg")
]
GRID = trial_grid(config)
# The datasets some cell reads (the study's always: its device ceiling and the report's).
USED_DATASETS = [
    n for n in DATASETS if n == DATASET or any(c.dataset == n for c in GRID)
]
MANIFESTS = [f"results/datasets/{name}/manifest.csv" for name in USED_DATASETS]


wildcard_constraints:
    dataset="|".join(re.escape(name) for name in DATASETS),
    phase="|".join(PHASES),
    variant="[a-z-]+",
    params="default|[a-z0-9_+-]+",
    decoder="[a-z0-9-]+",
    output="[a-z0-9]+",
    n=r"\d+",
    w=r"\d+",
    r=r"\d+",
    machine="[A-Za-z0-9_-]+",
    mb=r"\d+",


TRIAL_RECORD = (
    f"{TRIALS_DIR}/{{dataset}}/{TRIAL_TEMPLATE}"  # the one template (imgread.layout)
)
TRIAL_RECORD_ON = f"{TRIALS_DIR}/{{dataset}}/{MACHINE_TEMPLATE}"


def caption_template(name):
    """The caption template of a figure or table: workflow/report/<name>.rst, or the owning
    phase's own folder (Phase.captions_dir) for a phase from outside the package."""
    owner = FIGURES.get(name) or next(
        (ph for ph in PHASES.values() for t in ph.tables if t.stem == name), None
    )
    if owner is not None and owner.captions_dir:
        return str(Path(owner.captions_dir) / f"{name}.rst")
    return f"workflow/report/{name}.rst"


def trial_log(record):
    """A trial's log: its record's path under results/logs/, ending in .log."""
    return (
        record.replace("results/trials/", "results/logs/trials/", 1).removesuffix(
            ".json"
        )
        + ".log"
    )


def trial_files(wildcards=None):
    """Every trial record the config asks for (declared, never globbed)."""
    return [c.path(TRIALS_DIR) for c in GRID]


def _resolved(phase_name, params):
    phase = PHASES[phase_name]
    return phase, phase.resolve(params)


def _reference_of(phase_name, params):
    """(decoder, output) whose sequential checksums a cell's delivered pixels are checked
    against, or None: the phase says (Phase.reference)."""
    phase, params = _resolved(phase_name, params)
    return phase.reference(params)


def reference_input(wildcards):
    """The reference checksums a trial checks its pixels against ([] if none)."""
    ref = _reference_of(wildcards.phase, parse_segment(wildcards.params))
    where = f"results/datasets/{wildcards.dataset}/reference"
    return f"{where}/{ref[0]}_{ref[1]}.csv" if ref else []


def reference_size(wildcards):
    """Images a reference covers: the largest n of any trial of its dataset that reads it."""
    want = (wildcards.decoder, wildcards.output)
    sizes = [
        c.n_images
        for c in GRID
        if c.dataset == wildcards.dataset
        and _reference_of(c.phase, dict(c.params)) == want
    ]
    return max(sizes, default=1)


def _cache_of(phase_name, params):
    """The decoder whose decoded cache a cell reads, or None (Phase.decoded_cache)."""
    phase, params = _resolved(phase_name, params)
    return phase.decoded_cache(params)


CACHE_DIR = f"{DATASET_OF}/cache"
CACHES = sorted(
    {(c.dataset, d) for c in GRID if (d := _cache_of(c.phase, dict(c.params)))}
)
CACHE_FILES = [
    f"results/datasets/{name}/cache/{decoder}/cache.json" for name, decoder in CACHES
]


def cache_input(wildcards):
    """The decoded cache a trial reads ([] where it reads the images)."""
    decoder = _cache_of(wildcards.phase, parse_segment(wildcards.params))
    where = f"results/datasets/{wildcards.dataset}/cache"
    return f"{where}/{decoder}/cache.json" if decoder else []


def cache_size(wildcards):
    """Images a decoded cache covers: the largest n of any trial of its dataset that reads it."""
    return max(
        c.n_images
        for c in GRID
        if c.dataset == wildcards.dataset
        and _cache_of(c.phase, dict(c.params)) == wildcards.decoder
    )


def shards_input(wildcards):
    """The shard index a trial reads (its grid key shard_mb; [] for loose files)."""
    mb = int(parse_segment(wildcards.params).get("shard_mb", 0))
    return (
        f"results/datasets/{wildcards.dataset}/shards/{mb}mb/shards.csv" if mb else []
    )


def cache_settings(wildcards):
    """The cache settings a trial depends on: cold cells flush; warm cells read first.

    As a param, a changed cache method reruns the cold trials and leaves warm trials alone.
    """
    params = parse_segment(wildcards.params)
    if _is_cold(wildcards.phase, params):
        if config["cluster"][
            "stage_dataset"
        ]:  # only then: other runs' params stay as they were
            return {
                **config["cache"],
                "stage_dataset": True,
                "stage_dir": config["cluster"]["stage_dir"],
            }
        return config["cache"]
    return {"method": "warm-read"}


def storage_settings(wildcards):
    """The storage profile a trial reads from (name, kind, settings): as a param, a changed
    profile reruns its trials and leaves the others alone."""
    name = parse_segment(wildcards.params).get("storage")
    return storage_of(config, name) if name else None


def storage_lifecycle(when):
    """Remove what killed earlier runs left of the storage emulation (namespaces, nginx,
    cgroups; a trial cleans up after itself on every other way out), and at the start say in
    one line each which storage profiles this machine cannot measure."""
    for line in storage_registry.sweep():
        print(f"imgread: removed a leftover of an earlier run: {line}", file=sys.stderr)
    if when == "start":
        for line in [
            *([CONVERTED] if CONVERTED else []),
            *skipped_storage(config).values(),
            *skipped_cells(config),
        ]:
            print(f"imgread: {line}", file=sys.stderr)


def shared_storage(wildcards):
    """1 for a trial that reads the dataset cold where it is (a shared filesystem on a
    cluster: profiles/slurm lets one such trial run at a time), else 0."""
    return int(_reads_shared_storage(wildcards.phase, parse_segment(wildcards.params)))


def dataset_settings(wildcards):
    """What the dataset rule makes (a changed setting regenerates that dataset)."""
    return dataset_rule_settings(DATASETS[wildcards.dataset])


def print_recommendation():
    """At the end of a run: the answer, from the table the run wrote (if it got that far)."""
    path = Path("results/tables/recommendation.md")
    if path.exists():
        print(f"\nWhat to use on this machine ({path}):\n\n{path.read_text()}")


PARSED_AT = time.time()  # this run's start: logs written since belong to it


def print_failures():
    """When a run fails: the quiet profile hides Snakemake's "Error in rule" blocks, so name the
    jobs' logs written during this run that hold an error, with their last lines."""
    failed = [
        log
        for log in sorted(
            Path("results/logs").rglob("*.log"), key=lambda p: p.stat().st_mtime
        )
        if log.stat().st_mtime >= PARSED_AT
        and any(
            word in log.read_text(errors="replace") for word in ("Error", "Traceback")
        )
    ]
    for log in failed[-3:]:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        print(
            f"\nimgread: a job failed; its log {log} ends with:\n{tail}",
            file=sys.stderr,
        )
    if not failed:
        print(
            "imgread: the run failed; see the log above and results/logs/",
            file=sys.stderr,
        )


def check_report_matches():
    """With --report: refuse, before anything is read, when results/tables/ were made with
    another config than this one (the report would show one study under another's settings).
    `make report` passes the config the last `make quick`/`reproduce`/`smoke` used."""
    study = Path("results/tables/study.json")
    if "--report" not in sys.argv or not study.exists():
        return
    made = json.loads(study.read_text())
    if made.get("config_digest") != config_digest(config):
        d = made["dataset"]
        sys.exit(
            f"imgread: results/tables/ were made with another config (dataset {d['name']}, "
            f"{made['trials']} trials) than this one (dataset {DATASET}, {len(GRID)} trials "
            f"planned); build the report with the config the tables were made with (make "
            f"report uses the one make last ran), or run this config's study first"
        )


check_report_matches()


def partition_of(wildcards):
    """The SLURM partition a trial_on job is submitted to: its machine."""
    return wildcards.machine


def check_cluster():
    """On SLURM, before any job: one line and a stop if sbatch is missing or a partition the
    run would submit to does not exist (SLURM itself would only fail job by job)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    if shutil.which("sbatch") is None:
        sys.exit(
            "imgread: sbatch is not on PATH: this run uses the SLURM executor "
            "(profiles/slurm); run it on a SLURM login node, or run locally without the profile"
        )
    listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
    exists = set(listed.stdout.split())
    default = workflow.resource_settings.default_resources
    wanted = set(config["cluster"]["partitions"])
    if default is not None and "slurm_partition" in default:
        wanted.add(str(default["slurm_partition"].raw).strip("'\""))
    missing = sorted(p for p in wanted if p not in exists)
    if listed.returncode == 0 and missing:
        sys.exit(
            f"imgread: SLURM partition(s) {', '.join(missing)} do not exist on this cluster "
            f"(sinfo lists {', '.join(sorted(exists)) or 'none'}); fix cluster.partitions in "
            f"the config or slurm_partition in profiles/slurm"
        )


def _is_cold(phase_name, params):
    """Whether a cell's trials start from a cold page cache (read from the device)."""
    phase, params = _resolved(phase_name, params)
    return phase.page_cache(params) == "cold"


def _reads_shared_storage(phase_name, params):
    return _is_cold(phase_name, params) and not config["cluster"]["stage_dataset"]


def trial_group(wildcards):
    """The job group of a trial on a cluster: per machine, and apart for the trials that take
    `shared_storage`, so that the others' groups are all submitted at once and SLURM starts
    each the moment a node is free (a group holding shared_storage waits for the one before).
    """
    kind = (
        "cold"
        if _reads_shared_storage(wildcards.phase, parse_segment(wildcards.params))
        else "warm"
    )
    machine = getattr(wildcards, "machine", "")
    name = f"trials-{kind}" + (f"-on-{machine}" if machine else "")
    # group-components are looked up by a group's parent name, which Snakemake records only
    # for wildcard templates: record it here, so `trials=50` in profiles/slurm applies
    workflow.parent_groupids[name] = "trials"
    return name


# A device ceiling per dataset read cold (the study's always): its files' sizes set it.
DEVICE_CEILINGS = [
    f"results/datasets/{name}/device_ceiling.json"
    for name in USED_DATASETS
    if name == DATASET
    or any(c.dataset == name and _is_cold(c.phase, dict(c.params)) for c in GRID)
]
