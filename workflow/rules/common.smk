# Helpers shared by the rules: config validation, the trial grid, paths and params.
import json
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

# The package lives in src/ of this checkout (rule scripts find it via scripts/imgread_src.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from imgread.config import FIGURES, check_config, check_schema, trial_grid
from imgread.phases import PHASES, parse_segment
from imgread.study import config_digest

min_version("9.0")


# One clear line for a bad value, before any job: the schema (with our wording), then
# Snakemake's validate to fill in defaults, then the checks a schema cannot express.
check_schema(config, Path(workflow.basedir) / "config/schema.yaml")
validate(config, "../../config/schema.yaml", set_default=True)
check_config(config)

DATASET = config["dataset"]["name"]
DATASET_DIR = f"results/datasets/{DATASET}"
MANIFEST = f"{DATASET_DIR}/manifest.csv"
VERIFIED = f"{DATASET_DIR}/verified.ok"
REFERENCE_DIR = f"{DATASET_DIR}/reference"
DEVICE_CEILING = f"{DATASET_DIR}/device_ceiling.json"
# The report's own text (the recommendation first) is written from the records by aggregate.
REPORT_TEXT = "results/report/workflow.rst"
TRIALS_DIR = f"results/trials/{DATASET}"
TABLES = [
    "results/tables/trials.csv",
    "results/tables/frames.csv",
    "results/tables/summary.csv",
    "results/tables/speedup.csv",
    "results/tables/load_table.md",
    "results/tables/decode_table.md",
    "results/tables/decode_pipeline.md",
    "results/tables/decoded_cache.csv",
    "results/tables/dataloader_workers.csv",
    "results/tables/stream_producers.csv",
    "results/tables/scaling.csv",
    "results/tables/recommendation.csv",
    "results/tables/recommendation.md",
    "results/tables/ceilings.csv",
    "results/tables/study.json",
]
FIGURE_NAMES = FIGURES  # one list, in the package that draws them
FIGURE_FILES = [
    f"results/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "svg")
]
GRID = trial_grid(config)


wildcard_constraints:
    phase="|".join(PHASES),
    variant="[a-z-]+",
    params="default|[a-z0-9_+-]+",
    decoder="[a-z0-9-]+",
    output="[a-z0-9]+",
    n=r"\d+",
    w=r"\d+",
    r=r"\d+",
    machine="[A-Za-z0-9_-]+",


def trial_files(wildcards=None):
    """Every trial record the config asks for (declared, never globbed)."""
    return [c.path(TRIALS_DIR) for c in GRID]


def _reference_of(phase, params):
    """(decoder, output) whose sequential checksums a cell's delivered pixels are checked
    against, or None (decode cells that discard the pixels, load cells)."""
    if phase in ("dataloader", "stream"):
        return params["decoder"], "crop224"
    if phase == "decode" and params.get("delivery") == "pixels":
        return params["decoder"], params["output"]
    return None


def reference_input(wildcards):
    """The reference checksums a trial checks its pixels against ([] if none)."""
    ref = _reference_of(wildcards.phase, parse_segment(wildcards.params))
    return f"{REFERENCE_DIR}/{ref[0]}_{ref[1]}.csv" if ref else []


def reference_size(wildcards):
    """Images a reference covers: the largest n of any trial that reads it."""
    want = (wildcards.decoder, wildcards.output)
    sizes = [c.n_images for c in GRID if _reference_of(c.phase, dict(c.params)) == want]
    return max(sizes, default=1)


def _reads_cache(phase, params):
    return phase == "dataloader" and params["source"] != "jpeg"


CACHE_DIR = f"{DATASET_DIR}/cache"
CACHES = sorted(
    {dict(c.params)["decoder"] for c in GRID if _reads_cache(c.phase, dict(c.params))}
)


def cache_input(wildcards):
    """The decoded cache a DataLoader trial reads ([] for JPEG sources)."""
    params = parse_segment(wildcards.params)
    if not _reads_cache(wildcards.phase, params):
        return []
    return f"{CACHE_DIR}/{params['decoder']}/cache.json"


def cache_size(wildcards):
    """Images a decoded cache covers: the largest n of any trial that reads it."""
    return max(
        c.n_images
        for c in GRID
        if _reads_cache(c.phase, dict(c.params))
        and dict(c.params)["decoder"] == wildcards.decoder
    )


def cache_settings(wildcards):
    """The cache settings a trial depends on: load trials flush; decode trials read warm.

    As a param, a changed cache method reruns the load trials and leaves decode trials alone.
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


def shared_storage(wildcards):
    """1 for a trial that reads the dataset cold where it is (a shared filesystem on a
    cluster: profiles/slurm lets one such trial run at a time), else 0."""
    return int(_reads_shared_storage(wildcards.phase, parse_segment(wildcards.params)))


def dataset_settings(wildcards=None):
    """What the dataset rule makes (a changed setting regenerates the dataset)."""
    return config["dataset"]


def print_recommendation():
    """At the end of a run: the answer, from the table the run wrote (if it got that far)."""
    path = Path("results/tables/recommendation.md")
    if path.exists():
        print(f"\nWhat to use on this machine ({path}):\n\n{path.read_text()}")


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
    phase = PHASES[phase_name]
    return phase.page_cache(phase.resolve(params)) == "cold"


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
