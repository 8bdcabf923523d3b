"""The phases imgread knows: the built-in ones listed here, and any other package's phase
registered under the ``imgread.phases`` entry-point group (``name = "module:Class"``), as a
plug-in is found by its class path. Each is checked against the contract when it loads.

Nothing else in the package names a phase: the workflow, the analysis, the figures and the
recommendation iterate over :data:`PHASES` and ask each phase what they need.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from imgread.errors import UserError
from imgread.phases.base import Phase

BUILTIN = (
    "imgread.phases.load.phase:LoadPhase",
    "imgread.phases.decode.phase:DecodePhase",
    "imgread.phases.dataloader.phase:DataLoaderPhase",
    "imgread.phases.stream.phase:StreamPhase",
)
ENTRY_POINT_GROUP = "imgread.phases"


def load_object(dotted: str):
    """The object a "module:attribute" path names; UserError naming the path otherwise."""
    module, _, attr = dotted.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load {dotted!r}: {exc}") from None
    return obj


def check_phase(phase: Phase, where: str) -> Phase:
    """The contract a phase must meet, checked when it loads (RuntimeError naming it)."""
    problems = []
    if not phase.name or not phase.name.replace("_", "").isalnum():
        problems.append(f"name {phase.name!r} must be a lower-case word")
    if not phase.variants:
        problems.append("no variants")
    if type(phase).verify is Phase.verify:
        problems.append("verify() is not implemented")
    if phase.baseline[0] not in phase.variants:
        problems.append(f"baseline variant {phase.baseline[0]!r} is not one of its variants")
    for key in phase.job_keys:
        if key not in {p.name for p in phase.params}:
            problems.append(f"job key {key!r} is not one of its params")
    if phase.ceiling not in ("cpu", "device", "model", "none"):
        problems.append(f"ceiling {phase.ceiling!r} is not cpu, device, model or none")
    for name, target in phase.figures.items():
        if ":" not in target:
            problems.append(f"figure {name!r}: {target!r} is not 'module:function'")
    if problems:
        raise RuntimeError(f"phase {where} breaks the phase contract: {'; '.join(problems)}")
    return phase


def _discover() -> dict[str, Phase]:
    found: list[tuple[str, object]] = [(path, load_object(path)) for path in BUILTIN]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"{ep.value} (entry point {ep.name})", ep.load()))
    phases: dict[str, Phase] = {}
    for where, obj in found:
        phase = obj() if isinstance(obj, type) else obj
        if not isinstance(phase, Phase):
            raise RuntimeError(f"{where} is not a imgread.phases.base.Phase")
        if phase.name in phases:
            raise RuntimeError(f"phase {phase.name!r} of {where} is registered twice")
        phases[phase.name] = check_phase(phase, where)
    return phases


PHASES: dict[str, Phase] = _discover()
# Every phase's grid keys, in registry order: the columns a cell is keyed by.
PARAM_COLUMNS: list[str] = list(dict.fromkeys(p.name for ph in PHASES.values() for p in ph.params))
# Every figure, in registry order: {name: the phase that draws it}.
FIGURES: dict[str, Phase] = {name: ph for ph in PHASES.values() for name in ph.figures}


def get_phase(name: str) -> Phase:
    """The registered phase; UserError naming the allowed names otherwise."""
    try:
        return PHASES[name]
    except KeyError:
        raise UserError(f"unknown phase {name!r}; choose one of {', '.join(PHASES)}") from None
