"""Checks of a study config beyond its JSON schema.

The schema (config/schema.yaml, imgread.plan.schema) checks types and ranges field by field;
these checks need several fields at once, a registry (phases, variants, decoders) or the
machine (a folder, root, free disk). Each raises a UserError naming the field, the value and
what is allowed, before any job runs. None of them runs a command.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgread.answer.accelerators import profiles as accelerator_profiles
from imgread.dataset import find_candidates
from imgread.errors import UserError
from imgread.instruments import page_cache as cachectl
from imgread.phases.registry import PHASES
from imgread.plan.grid import (
    blocks,
    blocks_where,
    primary_dataset,
    storage_profiles,
    trial_grid,
    used_storage,
)
from imgread.trial.spec import is_cold


def check_config(config: dict) -> None:
    """Raise UserError for the first problem a schema cannot see (run after check_schema,
    which owns every per-field type and range)."""
    _check_datasets(config)
    _check_phases(config)
    accelerator_profiles(config.get("accelerators"))  # either batch_size + step_s or images_per_s
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
    if not grid and not config.get("searches"):
        raise UserError(
            "config 'phases': no variant has any workers and there are no searches; "
            "nothing to measure"
        )
    for i, ds in enumerate(config["datasets"]):
        if ds.get("source") and any(c.dataset == ds["name"] for c in grid):
            _check_source(ds, f"datasets[{i}]")
    _check_cache(config["cache"], cold=any(is_cold(c.phase, dict(c.params)) for c in grid))


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
    for where, block in blocks_where(config):
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
    for where, block in blocks_where(config):
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


def _check_sizes(config: dict) -> None:
    """Every cell's n within its dataset's count."""
    counts = {d["name"]: d["count"] for d in config["datasets"]}
    primary = primary_dataset(config)
    for where, block in blocks_where(config):
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


def _check_phases(config: dict) -> None:
    """Phases, variants, workers and keys against the registry (the source of truth, so a
    variant added there but not yet to schema.yaml, or the reverse, is caught here). The
    decoders too: schema.yaml lists none, the registry knows them (plug-ins included)."""
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
