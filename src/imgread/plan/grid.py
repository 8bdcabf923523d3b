"""The trial grid a study config expands to, and the config's datasets and storage profiles.

The grid depends on the config alone, never on the machine: a dry run plans the trials a real
run makes. Cells on a storage profile this machine cannot emulate are planned too and end as
recorded skips (imgread.plan.storage).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from imgread.decoders import can_decode
from imgread.errors import UserError
from imgread.layout import trial_path
from imgread.phases.registry import PHASES
from imgread.storage import registry as storage
from imgread.util import without_later_defaults


@dataclass(frozen=True)
class Cell:
    """One trial of the grid; ``params`` are the phase's grid keys as (name, value) pairs."""

    phase: str
    variant: str
    n_images: int
    workers: int
    repetition: int
    params: tuple[tuple[str, str], ...] = ()
    machine: str = ""  # a SLURM partition of cluster.partitions ("" where none are listed)
    dataset: str = ""  # a name of the config's datasets

    def path(self, trials_dir: str) -> str:
        """The trial record's path (imgread.layout): every key of the cell is in it (the
        dataset first, and the machine it runs on, under on-<partition>/, where the config
        lists partitions)."""
        return trial_path(
            f"{trials_dir}/{self.dataset}",
            self.phase,
            self.variant,
            dict(self.params),
            self.n_images,
            self.workers,
            self.repetition,
            self.machine,
        )


def blocks(settings) -> list[dict]:
    """A variant's settings as a list of blocks (one block may be given without the list)."""
    return settings if isinstance(settings, list) else [settings or {}]


def trial_grid(config: dict) -> list[Cell]:
    """Every cell and repetition the config asks for, in a stable order, without duplicates.

    Each block of a variant is a product: its workers x sizes x every list of the phase's
    grid keys (defaults: the phase's defaults, i.e. the study's cells), over its repetitions.
    Combinations that repeat another cell's work (``Phase.redundant``) are left out, and so
    are cells whose decoder cannot read their dataset's format (:func:`skipped_cells`). The
    machine is never asked: cells on storage it cannot emulate stay (imgread.plan.storage).
    """
    cells: dict[Cell, None] = {}
    machines = (config.get("cluster") or {}).get("partitions") or [""]
    for machine in machines:
        for cell in _cells(config):
            if undecodable_reason(config, cell):
                continue
            cells[replace(cell, machine=machine)] = None
    return list(cells)


def _cells(config: dict):
    primary = primary_dataset(config)
    for phase_name, variants in config["phases"].items():
        phase = PHASES[phase_name]
        for variant, settings in (variants or {}).items():
            for block in blocks(settings):
                for params in _combinations(phase, variant, block):
                    yield from _block_cells(config, phase_name, variant, block, params, primary)


def _combinations(phase, variant: str, block: dict):
    """The block's combinations of the phase's grid keys, less the redundant ones."""
    names = [p.name for p in phase.params]
    values = [[p.check(v) for v in block.get(p.name, [p.default])] for p in phase.params]
    for combo in itertools.product(*values):
        params = dict(zip(names, combo, strict=True))
        if not phase.redundant(variant, params):
            yield path_params(phase, params)


def path_params(phase, params: dict[str, str]) -> dict[str, str]:
    """A cell's params as its trial path holds them: a key added later (Param.later) is left
    out at its default, so that the cells measured before it keep their paths."""
    return without_later_defaults(params, {p.name: p.default for p in phase.params if p.later})


def _block_cells(config, phase_name, variant, block, params, primary):
    reps = block.get("repetitions", config["repetitions"])
    for ds in block.get("dataset", [primary]):
        for n in block.get("sizes", config["sizes"]):
            for workers in block["workers"]:
                for r in range(reps):
                    yield Cell(
                        phase_name, variant, n, workers, r, tuple(params.items()), dataset=ds
                    )


def blocks_where(config: dict):
    """(field, block) for every block of the config's phases (field as an error names it)."""
    for phase_name, variants in config["phases"].items():
        for name, settings in (variants or {}).items():
            for i, block in enumerate(blocks(settings)):
                yield (
                    f"phases.{phase_name}.{name}"
                    + (f"[{i}]" if isinstance(settings, list) else ""),
                    block,
                )


# ----------------------------------------------------------------------------- datasets


def normalize_datasets(config: dict) -> str | None:
    """Read a config written before datasets were a list: its one ``dataset:`` is the study's
    dataset, merged over the first of ``datasets`` as it was merged over the default dataset
    (the other datasets stay). Returns a line saying so (None where there was nothing to
    convert)."""
    old = config.pop("dataset", None)
    if old is None:
        return None
    if not isinstance(old, dict):
        raise UserError(
            f"config 'dataset': expected a mapping (name, count, ...), got {old!r}; "
            "write the datasets as a list: datasets: [{name: ..., count: ...}]"
        )
    rest = config.get("datasets") or [{}]
    if not isinstance(rest, list) or not all(isinstance(d, dict) for d in rest):
        raise UserError("config 'datasets': expected a list of mappings (name, count, ...)")
    config["datasets"] = [{**rest[0], **old}, *rest[1:]]
    return (
        "config 'dataset' (one dataset, the old form) is read as the first of 'datasets', "
        "the study's; write it as 'datasets: [{name: ..., ...}]' to silence this line"
    )


def datasets(config: dict) -> dict[str, dict]:
    """The config's datasets by name, in their order (the first is the study's)."""
    return {d["name"]: d for d in config["datasets"]}


def primary_dataset(config: dict) -> str:
    """The study's dataset: the first of the list (the default of every phase block)."""
    return config["datasets"][0]["name"]


# A dataset's settings added after its files were first made, at the values those files had:
# left out of what the dataset rule depends on, so adding the keys regenerates nothing.
_LATER_SETTINGS = {
    "size_spread": 0,
    "format": "jpeg",
    "quality": None,
    "subsampling": "4:2:0",
    "progressive": False,
    "shards_mb": [],
}


def dataset_rule_settings(settings: dict) -> dict:
    """What a dataset's files depend on: its settings less the later ones at their defaults
    and the shard sizes (shards are made from the files, by their own rule)."""
    kept = without_later_defaults(settings, _LATER_SETTINGS)
    return {k: v for k, v in kept.items() if k != "shards_mb"}


def dataset_format(settings: dict) -> str:
    """The image format a dataset holds (``jpeg`` for sampled folders: imgread.dataset
    samples JPEGs unless include_png, which mixes formats and is reported per image)."""
    return settings.get("format") or "jpeg"


def undecodable_reason(config: dict, cell: Cell) -> str:
    """Why a cell is left out: its decoder cannot read its dataset's format ("" if it can)."""
    decoder = dict(cell.params).get("decoder")
    if not decoder:
        return ""
    fmt = dataset_format(datasets(config)[cell.dataset])
    if can_decode(decoder, fmt):
        return ""
    return (
        f"{cell.phase} cells with decoder {decoder} on dataset {cell.dataset} ({fmt}) are "
        f"left out: {decoder} does not decode {fmt} (imgread decoders lists the formats)"
    )


def skipped_cells(config: dict) -> list[str]:
    """One line per (phase, decoder, dataset) the grid leaves out as undecodable."""
    lines: dict[str, None] = {}
    for cell in _cells(config):
        why = undecodable_reason(config, cell)
        if why:
            lines[why] = None
    return list(lines)


# ----------------------------------------------------------------------------- storage


def storage_profiles(config: dict) -> dict[str, storage.Profile]:
    """The config's storage profiles by name (``local`` included), checked."""
    return storage.parse_profiles(config.get("storage"))


def used_storage(config: dict) -> set[str]:
    """The storage profiles some cell of the config reads from."""
    used = set()
    for phase_name, variants in config["phases"].items():
        if PHASES[phase_name].reads_storage:
            for settings in (variants or {}).values():
                for block in blocks(settings):
                    if block.get("workers"):
                        used.update(block.get("storage", [storage.DEFAULT]))
    return used


def storage_of(config: dict, name: str) -> dict:
    """A profile's dict form, as a trial spec carries it."""
    return storage_profiles(config)[name].as_dict()
