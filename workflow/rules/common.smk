# Helpers shared by the rules: config validation, the trial grid, paths and params.
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

# The package lives in src/ of this checkout (rule scripts find it via scripts/imgread_src.py).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from imgread.config import FIGURES, check_config, check_schema, trial_grid
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
TRIALS_DIR = f"results/trials/{DATASET}"
TABLES = [
    "results/tables/trials.csv",
    "results/tables/summary.csv",
    "results/tables/speedup.csv",
    "results/tables/load_table.md",
    "results/tables/decode_table.md",
]
FIGURE_NAMES = FIGURES  # one list, in the package that draws them
FIGURE_FILES = [
    f"results/figures/{name}.{ext}" for name in FIGURE_NAMES for ext in ("png", "svg")
]
GRID = trial_grid(config)
_HOST = platform_info()
HOST = f"{_HOST['cpu_model']}, {_HOST['logical_cores']} logical cores, {_HOST['os']}"


wildcard_constraints:
    phase="load|decode",
    variant="[a-z]+",
    n=r"\d+",
    w=r"\d+",
    r=r"\d+",


def trial_files(wildcards=None):
    """Every trial record the config asks for (declared, never globbed)."""
    return [
        f"{TRIALS_DIR}/{c.phase}/{c.variant}/n{c.n_images}_w{c.workers}_r{c.repetition}.json"
        for c in GRID
    ]


def cache_settings(wildcards):
    """The cache settings a trial depends on: load trials flush; decode trials read warm.

    As a param, a changed cache method reruns the load trials and leaves decode trials alone.
    """
    if wildcards.phase == "load":
        return config["cache"]
    return {"method": "warm-read"}


def dataset_settings(wildcards=None):
    """What the dataset rule makes (a changed setting regenerates the dataset)."""
    return config["dataset"]
