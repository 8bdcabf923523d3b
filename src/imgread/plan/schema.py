"""A study config against its JSON schema (config/schema.yaml), in one line per problem.

The schema checks types and ranges field by field. Names that a registry owns (phases'
decoders, plug-ins included) are not listed in it: imgread.plan.checks checks them against
the registry, so the schema never falls behind it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import jsonschema
import yaml

from imgread.errors import UserError
from imgread.phases.registry import PHASES
from imgread.util import write_text_atomic


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


def _allowed(sub: dict) -> str:
    """What a field allows, as the end of an error line ("" where the schema does not say)."""
    if "enum" in sub:
        return f"; allowed: {sub['enum']}"
    lo, hi = sub.get("minimum"), sub.get("maximum")
    if lo is not None and hi is not None:
        return f"; allowed: {lo} to {hi}"
    if lo is not None:
        return f"; allowed: at least {lo}"
    if hi is not None:
        return f"; allowed: at most {hi}"
    return ""


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
    raise UserError(f"config '{field}': {err.message}{_allowed(sub)}")
