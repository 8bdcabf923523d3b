# Helpers shared by the rules: config validation, the trial grid, paths, input functions and
# targets. What a cell needs and the policies its jobs follow live in imgread.plan (tested
# there); phases are never named here: each rule asks the phase registry.
# Parsing runs no command: which storage this machine can emulate is asked at a run's start.
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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

from imgread.plan import inputs, scheduler_patch
from imgread.plan import run as plan_run
from imgread.plan.inputs import caption_template, trial_log
from imgread.plan import storage as plan_storage
from imgread.plan import searches as plan_searches
from imgread.plan.checks import check_config
from imgread.plan.grid import (
    dataset_rule_settings,
    datasets as config_datasets,
    normalize_datasets,
    primary_dataset,
    storage_of,
    trial_grid,
)
from imgread.plan.schema import check_schema, schema_file
from imgread.layout import (
    MACHINE_TEMPLATE,
    TRIAL_TEMPLATE,
    params_segment,
    parse_segment,
)
from imgread.phases.registry import FIGURES, PHASES

PARSED_AT = time.time()  # this run's start: logs written since belong to it

min_version("9.0")
scheduler_patch.patch()  # one pending re-evaluation (why: imgread.plan.scheduler_patch)

# One clear line for a bad value, before any job: the schema (with our wording), then
# Snakemake's validate to fill in defaults, then the checks a schema cannot express.
SCHEMA = Path(workflow.basedir) / "config/schema.yaml"
CONVERTED = normalize_datasets(config)  # an old single `dataset:` becomes a list of one
check_schema(config, SCHEMA)
validate(config, schema_file(SCHEMA), set_default=True)
check_config(config)
# The config's searches (workflow/rules/search.smk), and the cells their inputs are made for
SEARCHES = plan_searches.searches(config)
SEARCH_CELLS = [s.cell() for s in SEARCHES]

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
TRIALS_DIR = "results/trials"  # then <dataset>/ (imgread.plan.grid.Cell.path)
# What a storage profile's check found (imgread.plan.storage), read by its trials.
STORAGE_CHECK_OF = "results/storage/{profile}.json"
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
    "results/tables/accelerators.csv",
    "results/tables/searches.csv",
    "results/tables/study.json",
]
FIGURE_NAMES = list(FIGURES)  # every registered phase's figures
FIGURE_FILES = [
    f"results/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "svg")
]
GRID = trial_grid(config)  # the config's alone: a dry run plans what a run makes
USED_DATASETS = inputs.used_datasets(list(DATASETS), DATASET, GRID)
MANIFESTS = [f"results/datasets/{name}/manifest.csv" for name in USED_DATASETS]
# A device ceiling per dataset read cold (the study's always): its files' sizes set it.
DEVICE_CEILINGS = [
    f"results/datasets/{name}/device_ceiling.json"
    for name in inputs.ceiling_datasets(list(DATASETS), DATASET, GRID)
]
CACHE_DIR = f"{DATASET_OF}/cache"
CACHE_FILES = [
    f"results/datasets/{name}/cache/{decoder}/cache.json"
    for name, decoder in inputs.decoded_caches(GRID)
]
STORAGE_CHECKED = plan_storage.checked_profiles(config)  # the searches' profiles too


wildcard_constraints:
    dataset="|".join(re.escape(name) for name in DATASETS),
    phase="|".join(PHASES),
    variant="[a-z0-9_-]+",  # a plug-in's name: lower-case letters, digits, - or _
    params="default|[a-z0-9_+-]+",
    decoder="[a-z0-9-]+",
    output="[a-z0-9]+",
    n=r"\d+",
    w=r"\d+",
    r=r"\d+",
    machine="[A-Za-z0-9_-]+",
    mb=r"\d+",
    profile="|".join(re.escape(name) for name in STORAGE_CHECKED) or "(?!)",


TRIAL_RECORD = (
    f"{TRIALS_DIR}/{{dataset}}/{TRIAL_TEMPLATE}"  # the one template (imgread.layout)
)
TRIAL_RECORD_ON = f"{TRIALS_DIR}/{{dataset}}/{MACHINE_TEMPLATE}"


def trial_files(wildcards=None):
    """Every trial record the config asks for (declared, never globbed)."""
    return [c.path(TRIALS_DIR) for c in GRID]


def _params(wildcards):
    return parse_segment(wildcards.params)


def reference_input(wildcards):
    """The reference checksums a trial checks its pixels against ([] if none)."""
    ref = inputs.reference_of(wildcards.phase, _params(wildcards))
    where = f"results/datasets/{wildcards.dataset}/reference"
    return f"{where}/{ref[0]}_{ref[1]}.csv" if ref else []


def reference_size(wildcards):
    """Images a reference covers (imgread.plan.inputs.reference_size)."""
    w = wildcards
    return inputs.reference_size(GRID + SEARCH_CELLS, w.dataset, w.decoder, w.output)


def cache_input(wildcards):
    """The decoded cache a trial reads ([] where it reads the images)."""
    decoder = inputs.cache_of(wildcards.phase, _params(wildcards))
    where = f"results/datasets/{wildcards.dataset}/cache"
    return f"{where}/{decoder}/cache.json" if decoder else []


def cache_size(wildcards):
    """Images a decoded cache covers (imgread.plan.inputs.cache_size)."""
    return inputs.cache_size(GRID + SEARCH_CELLS, wildcards.dataset, wildcards.decoder)


def shards_input(wildcards):
    """The shard index a trial reads (its grid key shard_mb; [] for loose files)."""
    mb = inputs.shard_mb(_params(wildcards))
    where = f"results/datasets/{wildcards.dataset}/shards"
    return f"{where}/{mb}mb/shards.csv" if mb else []


def storage_check_input(wildcards):
    """The check of the storage profile a trial reads from ([] for local storage)."""
    name = plan_storage.needs_check(_params(wildcards))
    return STORAGE_CHECK_OF.format(profile=name) if name else []


def cache_settings(wildcards):
    """The cache settings a trial depends on (imgread.plan.inputs.cache_settings)."""
    return inputs.cache_settings(config, wildcards.phase, _params(wildcards))


def storage_settings(wildcards):
    """The storage profile a trial reads from (name, kind, settings): as a param, a changed
    profile reruns its trials and leaves the others alone."""
    name = _params(wildcards).get("storage")
    return storage_of(config, name) if name else None


def shared_storage(wildcards):
    """1 for a trial that reads the dataset cold where it is (a shared filesystem on a
    cluster: profiles/slurm lets one such trial run at a time), else 0."""
    p = _params(wildcards)
    return int(inputs.reads_shared_storage(config, wildcards.phase, p))


def dataset_settings(wildcards):
    """What the dataset rule makes (a changed setting regenerates that dataset)."""
    return dataset_rule_settings(DATASETS[wildcards.dataset])


# With --report: refuse, before anything is read, a report of another config's tables.
if "--report" in sys.argv:
    _why = plan_run.report_mismatch(
        config, "results/tables/study.json", DATASET, len(GRID)
    )
    if _why:
        sys.exit(_why)


def partition_of(wildcards):
    """The SLURM partition a trial_on job is submitted to: its machine."""
    return wildcards.machine


def check_cluster():
    """On SLURM, before any job: one line and a stop if sbatch is missing or a partition the
    run would submit to does not exist (imgread.plan.plan_run.cluster_problem)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    wanted = set(config["cluster"]["partitions"])
    default = workflow.resource_settings.default_resources
    if default is not None and "slurm_partition" in default:
        wanted.add(str(default["slurm_partition"].raw).strip("'\""))
    why = plan_run.cluster_problem(wanted)
    if why:
        sys.exit(why)


def trial_group(wildcards):
    """The job group of a trial on a cluster (imgread.plan.inputs.trial_group)."""
    machine = getattr(wildcards, "machine", "")
    name = inputs.trial_group(config, wildcards.phase, _params(wildcards), machine)
    # group-components are looked up by a group's parent name, which Snakemake records only
    # for wildcard templates: record it here, so `trials=50` in profiles/slurm applies
    workflow.parent_groupids[name] = "trials"
    return name


# A search (workflow/rules/search.smk) asks for the inputs of its cell as a trial does.
SEARCH_OF = {s.name: s for s in SEARCHES}
SEARCH_FILES = [s.output() for s in SEARCHES]


def _cell_of(wildcards):
    """The search's cell as a trial's wildcards (phase, variant, dataset, params)."""
    s = SEARCH_OF[wildcards.name]
    return SimpleNamespace(
        phase=s.phase,
        variant=s.variant,
        dataset=s.dataset,
        params=params_segment(s.probe_params()),
    )


def _of_cell(function):
    """A trial's input function, asked for a search's cell."""
    return lambda wildcards: function(_cell_of(wildcards))
