"""What each cell of the grid needs before its trial runs, and the policies its job follows.

A phase says what a cell reads (Phase.reference, Phase.decoded_cache, Phase.page_cache); this
turns that into the workflow's terms: which reference checksums and decoded caches are built
and for how many images, the cache settings a trial depends on, its job group on a cluster,
which datasets are made and which get a device ceiling. Paths are the workflow's (common.smk).
"""

from __future__ import annotations

from pathlib import Path

from imgread.phases.registry import FIGURES, PHASES
from imgread.plan.grid import Cell
from imgread.trial.spec import is_cold  # the one coldness answer, also the trials'


def _resolved(phase_name: str, params: dict):
    phase = PHASES[phase_name]
    return phase, phase.resolve(params)


def reference_of(phase_name: str, params: dict) -> tuple[str, str] | None:
    """(decoder, output) whose sequential checksums a cell's delivered pixels are checked
    against, or None: the phase says (Phase.reference)."""
    phase, params = _resolved(phase_name, params)
    return phase.reference(params)


def reference_size(grid: list[Cell], dataset: str, decoder: str, output: str) -> int:
    """Images a reference covers: the largest n of any trial of its dataset that reads it."""
    sizes = [
        c.n_images
        for c in grid
        if c.dataset == dataset and reference_of(c.phase, dict(c.params)) == (decoder, output)
    ]
    return max(sizes, default=1)


def cache_of(phase_name: str, params: dict) -> str | None:
    """The decoder whose decoded cache a cell reads, or None (Phase.decoded_cache)."""
    phase, params = _resolved(phase_name, params)
    return phase.decoded_cache(params)


def decoded_caches(grid: list[Cell]) -> list[tuple[str, str]]:
    """(dataset, decoder) of every decoded cache some cell reads, sorted."""
    return sorted({(c.dataset, d) for c in grid if (d := cache_of(c.phase, dict(c.params)))})


def cache_size(grid: list[Cell], dataset: str, decoder: str) -> int:
    """Images a decoded cache covers: the largest n of any trial of its dataset that reads it."""
    return max(
        c.n_images
        for c in grid
        if c.dataset == dataset and cache_of(c.phase, dict(c.params)) == decoder
    )


def shard_mb(params: dict) -> int:
    """The shard size a cell reads, in MB (its grid key shard_mb; 0 for loose files)."""
    return int(params.get("shard_mb", 0))


def reads_shared_storage(config: dict, phase_name: str, params: dict) -> bool:
    """Whether a cell reads the dataset cold where it is (a shared filesystem on a cluster,
    unless cluster.stage_dataset copies it to the node first)."""
    return is_cold(phase_name, params) and not config["cluster"]["stage_dataset"]


def cache_settings(config: dict, phase_name: str, params: dict) -> dict:
    """The cache settings a trial depends on: cold cells flush; warm cells read first.

    As a param, a changed cache method reruns the cold trials and leaves warm trials alone.
    """
    if not is_cold(phase_name, params):
        return {"method": "warm-read"}
    cluster = config["cluster"]
    if cluster["stage_dataset"]:  # only then: other runs' params stay as they were
        return {**config["cache"], "stage_dataset": True, "stage_dir": cluster["stage_dir"]}
    return config["cache"]


def trial_group(config: dict, phase_name: str, params: dict, machine: str = "") -> str:
    """The job group of a trial on a cluster: per machine, and apart for the trials that read
    shared storage, so that the others' groups are all submitted at once and SLURM starts
    each the moment a node is free (a group reading shared storage waits for the one before).
    """
    kind = "cold" if reads_shared_storage(config, phase_name, params) else "warm"
    return f"trials-{kind}" + (f"-on-{machine}" if machine else "")


def used_datasets(names: list[str], primary: str, grid: list[Cell]) -> list[str]:
    """The datasets some cell reads, in the config's order (the study's always: its device
    ceiling and the report's)."""
    read = {c.dataset for c in grid}
    return [n for n in names if n == primary or n in read]


def ceiling_datasets(names: list[str], primary: str, grid: list[Cell]) -> list[str]:
    """The datasets that get a device ceiling: the study's and every one some cell reads
    cold (its files' sizes set the ceiling)."""
    cold = {c.dataset for c in grid if is_cold(c.phase, dict(c.params))}
    return [n for n in used_datasets(names, primary, grid) if n == primary or n in cold]


def caption_template(name: str) -> str:
    """The caption template of a figure or table: workflow/report/<name>.rst, or the owning
    phase's own folder (Phase.captions_dir) for a phase from outside the package."""
    owner = FIGURES.get(name) or next(
        (ph for ph in PHASES.values() for t in ph.tables if t.stem == name), None
    )
    if owner is not None and owner.captions_dir:
        return str(Path(owner.captions_dir) / f"{name}.rst")
    return f"workflow/report/{name}.rst"


def trial_log(record: str) -> str:
    """A trial's log: its record's path under results/logs/, ending in .log."""
    logs = record.replace("results/trials/", "results/logs/trials/", 1)
    return logs.removesuffix(".json") + ".log"
