"""Checks of a study config beyond its JSON schema, and the trial grid it expands to.

The schema (config/schema.yaml) checks types and ranges field by field; these checks need
several fields at once or the machine (a folder, root, free disk). Each raises a UserError
naming the field, the value and what is allowed, before any job runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imgread import cache as cachectl
from imgread.errors import UserError
from imgread.readers import PHASES, VARIANTS, variant_names

# The figures every study draws (imgread.figures has one plotter per name). Kept here, with no
# plotting imports, because the Snakefile reads it at every parse.
FIGURES = (
    "load_time",
    "decode_speedup",
    "decode_efficiency",
    "throughput",
    "published_comparison",
    "residency",
)


@dataclass(frozen=True)
class Cell:
    """One trial of the grid."""

    phase: str
    variant: str
    n_images: int
    workers: int
    repetition: int


def trial_grid(config: dict) -> list[Cell]:
    """Every (phase, variant, n, workers, repetition) the config asks for, in a stable order."""
    cells = []
    for phase, variants in config["phases"].items():
        for variant, settings in variants.items():
            for n in config["sizes"]:
                for workers in settings["workers"]:
                    for r in range(config["repetitions"]):
                        cells.append(Cell(phase, variant, n, workers, r))
    return cells


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def check_schema(config: dict, schema_path: str | os.PathLike) -> None:
    """Validate against the JSON schema; UserError naming the field, value and what is allowed.

    Snakemake's own ``validate`` (run after this, to fill in defaults) reports the same
    problems as a long jsonschema dump; this says it in one line.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path)))
    if not errors:
        return
    err = errors[0]
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
    ds = config["dataset"]
    sizes = config["sizes"]
    if max(sizes) > ds["count"]:
        raise UserError(
            f"config 'sizes': {max(sizes)} is larger than the dataset "
            f"(dataset.count = {ds['count']}); raise dataset.count or drop the size"
        )
    # Phases and variants are checked against the reader registry (the source of truth), so a
    # variant added there but not yet to schema.yaml, or the reverse, is caught here.
    for phase, variants in config["phases"].items():
        if phase not in PHASES:
            raise UserError(f"config 'phases': unknown phase {phase!r}; allowed: {list(PHASES)}")
        for name, settings in (variants or {}).items():
            if (phase, name) not in VARIANTS:
                raise UserError(
                    f"config 'phases.{phase}': unknown variant {name!r}; "
                    f"allowed: {variant_names(phase)}"
                )
            workers = settings.get("workers", [])
            if not VARIANTS[(phase, name)].parallel and workers not in ([], [1]):
                raise UserError(
                    f"config 'phases.{phase}.{name}.workers': {name} is not parallel, "
                    f"so workers must be [1] (or [] to leave it out), got {workers}"
                )
    if not trial_grid(config):
        raise UserError("config 'phases': no variant has any workers; nothing to measure")
    if ds.get("source"):
        source = Path(ds["source"])
        if not source.is_dir():
            raise UserError(f"config 'dataset.source': {source} does not exist or is not a folder")
        from imgread.dataset import find_candidates

        if not find_candidates(source, ds.get("include_png", False)):
            raise UserError(
                f"config 'dataset.source': {source} holds no images (.jpg/.jpeg"
                f"{', .png' if ds.get('include_png') else ''}, searched recursively)"
            )
    c = config["cache"]
    if c["method"] not in cachectl.METHODS:
        raise UserError(
            f"config 'cache.method': unknown method {c['method']!r}; "
            f"allowed: {list(cachectl.METHODS)}"
        )
    if "load" in config["phases"] and config["phases"]["load"]:
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
