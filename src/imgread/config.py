"""Checks of a study config beyond its JSON schema, and the trial grid it expands to.

The schema (config/schema.yaml) checks types and ranges field by field; these checks need
several fields at once or the machine (a folder, root, free disk). Each raises a UserError
naming the field, the value and what is allowed, before any job runs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import jsonschema
import yaml

from imgread.dataset import find_candidates
from imgread.decoders import can_decode
from imgread.errors import UserError
from imgread.instruments import page_cache as cachectl
from imgread.layout import trial_path
from imgread.phases.registry import PHASES
from imgread.storage import registry as storage
from imgread.util import without_later_defaults, write_text_atomic


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
    are cells on a storage profile this machine cannot emulate (:func:`skipped_storage` says
    which and why).
    """
    cells: dict[Cell, None] = {}
    machines = (config.get("cluster") or {}).get("partitions") or [""]
    skipped = skipped_storage(config)
    for machine in machines:
        for cell in _cells(config):
            if dict(cell.params).get("storage") in skipped or _undecodable(config, cell):
                continue
            cells[replace(cell, machine=machine)] = None
    return list(cells)


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


def _undecodable(config: dict, cell: Cell) -> bool:
    return bool(undecodable_reason(config, cell))


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


def skipped_storage(config: dict) -> dict[str, str]:
    """{profile: one line saying why it is not measured here} for the profiles the grid uses
    that this machine cannot emulate (no root, no nginx, no cgroup)."""
    profiles = storage_profiles(config)
    used = {name: profiles[name] for name in sorted(used_storage(config)) if name in profiles}
    return storage.unavailable(used)


def storage_of(config: dict, name: str) -> dict:
    """A profile's dict form, as a trial spec carries it."""
    return storage_profiles(config)[name].as_dict()


def _cells(config: dict):
    primary = primary_dataset(config)
    for phase_name, variants in config["phases"].items():
        phase = PHASES[phase_name]
        for variant, settings in (variants or {}).items():
            for block in blocks(settings):
                names = [p.name for p in phase.params]
                values = [
                    [p.check(v) for v in block.get(p.name, [p.default])] for p in phase.params
                ]
                for combo in itertools.product(*values):
                    params = dict(zip(names, combo, strict=True))
                    if phase.redundant(variant, params):
                        continue
                    for ds in block.get("dataset", [primary]):
                        for n in block.get("sizes", config["sizes"]):
                            for workers in block["workers"]:
                                reps = block.get("repetitions", config["repetitions"])
                                for r in range(reps):
                                    yield Cell(
                                        phase_name,
                                        variant,
                                        n,
                                        workers,
                                        r,
                                        tuple(params.items()),
                                        dataset=ds,
                                    )


def _is_cold(cell: Cell) -> bool:
    """Whether a cell's trials start from a cold page cache (flushed by cache.method)."""
    phase = PHASES[cell.phase]
    return phase.page_cache(phase.resolve(dict(cell.params))) == "cold"


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _specific(err):
    """For 'one of these shapes' errors, the error of the shape the value was meant to have
    (the branch whose type matched), so the message names the field that is wrong."""
    while err.validator in ("oneOf", "anyOf") and err.context:
        typed = [e for e in err.context if not (e.validator == "type" and not e.relative_path)]
        err = sorted(typed or err.context, key=lambda e: list(map(str, e.absolute_path)))[0]
    return err


def study_schema(schema_path: str | os.PathLike) -> dict:
    """config/schema.yaml with the config section of every registered phase that brings its
    own (Phase.schema: a phase from outside the package) added under ``phases``."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    sections = schema["properties"]["phases"]["properties"]
    for name, phase in PHASES.items():
        if phase.schema is not None and name not in sections:
            sections[name] = phase.schema
    return schema


def schema_file(schema_path: str | os.PathLike) -> str:
    """A path to :func:`study_schema` for Snakemake's ``validate`` (which takes a file): the
    schema itself, or a merged copy in a temporary file where a phase brings a section."""
    schema = study_schema(schema_path)
    if schema == yaml.safe_load(Path(schema_path).read_text(encoding="utf-8")):
        return str(Path(schema_path).resolve())
    text = yaml.safe_dump(schema)
    # Named by its content: every parse of the Snakefile (each job's too) finds the same file.
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"imgread-schema-{digest}.yaml"
    if not path.exists():
        write_text_atomic(path, text)
    return str(path)


def check_schema(config: dict, schema_path: str | os.PathLike) -> None:
    """Validate against the JSON schema; UserError naming the field, value and what is allowed.

    Snakemake's own ``validate`` (run after this, to fill in defaults) reports the same
    problems as a long jsonschema dump; this says it in one line.
    """
    schema = study_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path)))
    if not errors:
        return
    err = _specific(errors[0])
    field = _field(err.absolute_path)
    sub = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        raise UserError(f"config '{field}': unknown key(s) {extra}; allowed: {allowed}")
    allowed = ""
    if "enum" in sub:
        allowed = f"; allowed: {sub['enum']}"
    elif "minimum" in sub or "maximum" in sub:
        lo, hi = sub.get("minimum"), sub.get("maximum")
        allowed = "; allowed: " + (
            f"{lo} to {hi}"
            if lo is not None and hi is not None
            else f"at least {lo}"
            if lo is not None
            else f"at most {hi}"
        )
    raise UserError(f"config '{field}': {err.message}{allowed}")


def check_config(config: dict) -> None:
    """Raise UserError for the first problem a schema cannot see (run after check_schema,
    which owns every per-field type and range)."""
    _check_datasets(config)
    _check_phases(config)
    profiles = storage_profiles(config)
    unknown = sorted(used_storage(config) - set(profiles))
    if unknown:
        raise UserError(
            f"config 'phases': storage profile(s) {unknown} are not defined; "
            f"the config's storage list has {sorted(profiles)}"
        )
    _check_sizes(config)
    _check_shards(config)
    grid = trial_grid(config)
    if not grid:
        raise UserError("config 'phases': no variant has any workers; nothing to measure")
    for i, ds in enumerate(config["datasets"]):
        if ds.get("source") and any(c.dataset == ds["name"] for c in grid):
            _check_source(ds, f"datasets[{i}]")
    _check_cache(config["cache"], cold=any(_is_cold(cell) for cell in grid))


def _check_datasets(config: dict) -> None:
    """Names unique; every block's datasets defined."""
    seen: set[str] = set()
    for i, ds in enumerate(config["datasets"]):
        if ds["name"] in seen:
            raise UserError(
                f"config 'datasets[{i}].name': {ds['name']!r} is used twice; each dataset "
                "needs its own name (it is the folder of its files and its trials)"
            )
        seen.add(ds["name"])
        _check_shard_sizes(ds, f"datasets[{i}]")
    for where, block in _blocks_where(config):
        unknown = sorted(set(block.get("dataset", [])) - seen)
        if unknown:
            raise UserError(
                f"config '{where}.dataset': unknown dataset(s) {unknown}; the config's "
                f"datasets are {sorted(seen)} (add it to datasets, or drop it from the block)"
            )


def _largest_image_bytes(ds: dict) -> float | None:
    """About the largest image a generated dataset holds (None for a sampled one): its
    target size, times the area a drawn size can reach, plus the generator's 10 %."""
    if ds.get("source") or ds.get("format", "jpeg") == "png" or ds.get("quality"):
        return None  # the size is not set by target_bytes: packing says it exactly
    spread = ds.get("size_spread", 0)
    return ds["target_bytes"] * (1 + spread) ** 2 * 1.1


def _check_shard_sizes(ds: dict, where: str) -> None:
    largest = _largest_image_bytes(ds)
    for mb in ds.get("shards_mb", []):
        if largest is not None and mb * 1e6 < largest:
            raise UserError(
                f"config '{where}.shards_mb': {mb} MB is smaller than one image of dataset "
                f"{ds['name']} (up to about {largest / 1e6:.1f} MB); use larger shards"
            )


def _check_shards(config: dict) -> None:
    """A block's shard_mb sizes are packed for each of its datasets (listed in shards_mb)."""
    sizes = {d["name"]: d.get("shards_mb", []) for d in config["datasets"]}
    primary = primary_dataset(config)
    for where, block in _blocks_where(config):
        if not block.get("workers"):
            continue
        wanted = [int(mb) for mb in block.get("shard_mb", []) if int(mb)]
        if "shards" in block.get("source", []) and not wanted:
            raise UserError(
                f"config '{where}.source': shards needs the shard sizes to read: add "
                "shard_mb: [N, ...] (sizes the dataset's shards_mb lists)"
            )
        for ds in block.get("dataset", [primary]):
            missing = sorted(set(wanted) - set(sizes[ds]))
            if missing:
                listed = sizes[ds] or "empty: list the sizes to pack"
                raise UserError(
                    f"config '{where}.shard_mb': dataset {ds} is not packed into {missing} MB "
                    f"shards (its shards_mb is {listed}); add them to its shards_mb"
                )


def _blocks_where(config: dict):
    for phase_name, variants in config["phases"].items():
        for name, settings in (variants or {}).items():
            for i, block in enumerate(blocks(settings)):
                yield (
                    f"phases.{phase_name}.{name}"
                    + (f"[{i}]" if isinstance(settings, list) else ""),
                    block,
                )


def _check_sizes(config: dict) -> None:
    """Every cell's n within its dataset's count."""
    counts = {d["name"]: d["count"] for d in config["datasets"]}
    primary = primary_dataset(config)
    for where, block in _blocks_where(config):
        if not block.get("workers"):  # a block left out (workers []) measures nothing
            continue
        for ds in block.get("dataset", [primary]):
            largest = max(block.get("sizes", config["sizes"]))
            if largest > counts[ds]:
                field = f"{where}.sizes" if "sizes" in block else "sizes"
                raise UserError(
                    f"config '{field}': {largest} is larger than the dataset {ds} "
                    f"(count = {counts[ds]}); raise its count or drop the size"
                )


def _check_phases(config: dict) -> list[int]:
    """Phases, variants, workers and keys against the registry (the source of truth, so a
    variant added there but not yet to schema.yaml, or the reverse, is caught here); the
    blocks' own sizes."""
    sizes = []
    for phase_name, variants in config["phases"].items():
        if phase_name not in PHASES:
            raise UserError(
                f"config 'phases': unknown phase {phase_name!r}; allowed: {list(PHASES)}"
            )
        phase = PHASES[phase_name]
        for name, settings in (variants or {}).items():
            if name not in phase.variants:
                raise UserError(
                    f"config 'phases.{phase_name}': unknown variant {name!r}; "
                    f"allowed: {list(phase.variants)}"
                )
            for i, block in enumerate(blocks(settings)):
                where = f"phases.{phase_name}.{name}" + (
                    f"[{i}]" if isinstance(settings, list) else ""
                )
                _check_block(phase, name, block, where)
                if block.get("workers"):  # a block left out (workers []) measures nothing
                    sizes.extend(block.get("sizes", []))
    return sizes


def _check_block(phase, name: str, block: dict, where: str) -> None:
    workers = block.get("workers", [])
    least = phase.variants[name].min_workers
    if any(w < least for w in workers):
        raise UserError(
            f"config '{where}.workers': {name} takes at least {least} workers, got {workers}"
        )
    if not phase.variants[name].parallel and workers not in ([], [1]):
        raise UserError(
            f"config '{where}.workers': {name} is not parallel, "
            f"so workers must be [1] (or [] to leave it out), got {workers}"
        )
    for p in phase.params:
        for value in block.get(p.name, []):
            try:
                p.check(value)
            except UserError as exc:
                raise UserError(f"config '{where}.{p.name}': {exc}") from None


def _check_source(ds: dict, where: str = "dataset") -> None:
    source = Path(ds["source"])
    if not source.is_dir():
        raise UserError(f"config '{where}.source': {source} does not exist or is not a folder")
    if not find_candidates(source, ds.get("include_png", False)):
        raise UserError(
            f"config '{where}.source': {source} holds no images (.jpg/.jpeg"
            f"{', .png' if ds.get('include_png') else ''}, searched recursively)"
        )


def _check_cache(c: dict, cold: bool) -> None:
    if c["method"] not in cachectl.METHODS:
        raise UserError(
            f"config 'cache.method': unknown method {c['method']!r}; "
            f"allowed: {list(cachectl.METHODS)}"
        )
    if not cold:
        return
    if c["method"] == "drop_caches" and os.geteuid() != 0:
        raise UserError(
            "config 'cache.method': drop_caches needs root (it writes "
            "/proc/sys/vm/drop_caches); use fadvise"
        )
    if c["method"] == "saturate":
        try:
            cachectl.check_saturate_room(c["saturate_bytes"], c.get("saturate_dir"))
        except UserError as exc:
            raise UserError(f"config 'cache.saturate_bytes': {exc}") from None
