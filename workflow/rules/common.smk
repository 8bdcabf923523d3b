# Helpers shared by the rules: config validation, the trial grid, paths and params.
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

# The package lives in src/ of this checkout (rule scripts find it via scripts/imgread_src.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from imgread.config import FIGURES, check_config, check_schema, trial_grid
from imgread.phases import PHASES, parse_segment
from imgread.trial import platform_info

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
TRIALS_DIR = f"results/trials/{DATASET}"
TABLES = [
    "results/tables/trials.csv",
    "results/tables/summary.csv",
    "results/tables/speedup.csv",
    "results/tables/load_table.md",
    "results/tables/decode_table.md",
    "results/tables/decode_pipeline.md",
]
FIGURE_NAMES = FIGURES  # one list, in the package that draws them
FIGURE_FILES = [
    f"results/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "svg")
]
GRID = trial_grid(config)
_HOST = platform_info()
HOST = f"{_HOST['cpu_model']}, {_HOST['logical_cores']} logical cores, {_HOST['os']}"


wildcard_constraints:
    phase="|".join(PHASES),
    variant="[a-z-]+",
    params="default|[a-z0-9_-]+",
    decoder="[a-z0-9-]+",
    output="[a-z0-9]+",
    n=r"\d+",
    w=r"\d+",
    r=r"\d+",


def trial_files(wildcards=None):
    """Every trial record the config asks for (declared, never globbed)."""
    return [c.path(TRIALS_DIR) for c in GRID]


def reference_input(wildcards):
    """Decode trials that deliver pixels check them against the sequential decode's checksums."""
    params = parse_segment(wildcards.params)
    if params.get("delivery") != "pixels":
        return []
    return f"{REFERENCE_DIR}/{params['decoder']}_{params['output']}.csv"


def reference_size(wildcards):
    """Images a reference covers: the largest n of any trial that reads it."""
    want = {
        "decoder": wildcards.decoder,
        "output": wildcards.output,
        "delivery": "pixels",
    }
    sizes = [
        c.n_images
        for c in GRID
        if c.phase == "decode"
        and all(dict(c.params).get(k) == v for k, v in want.items())
    ]
    return max(sizes, default=1)


def cache_settings(wildcards):
    """The cache settings a trial depends on: load trials flush; decode trials read warm.

    As a param, a changed cache method reruns the load trials and leaves decode trials alone.
    """
    if PHASES[wildcards.phase].cache_state == "cold":
        return config["cache"]
    return {"method": "warm-read"}


def dataset_settings(wildcards=None):
    """What the dataset rule makes (a changed setting regenerates the dataset)."""
    return config["dataset"]
