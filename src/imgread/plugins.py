"""What the registries of plug-ins share (decoders, storage clients): the objects of an
entry-point group, each named by where it came from, and one name per plug-in."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import TypeVar

from imgread.errors import UserError

T = TypeVar("T")


def entry_point_objects(group: str, what: str) -> list[tuple[str, str, object]]:
    """(where, entry point name, loaded object) of every entry point of ``group``; a UserError
    naming the entry point where one cannot be loaded (``what``: "decoder", ...)."""
    found = []
    for ep in metadata.entry_points(group=group):
        where = f"{ep.value} (entry point {ep.name} of group {group})"
        try:
            obj = ep.load()
        except (ImportError, AttributeError) as exc:
            raise UserError(
                f"cannot load {what} {where}: {type(exc).__name__}: {exc}; install the "
                "package that provides it, or fix its entry point"
            ) from None
        found.append((where, ep.name, obj))
    return found


def builtin_objects(dotted: Iterable[str]) -> list[tuple[str, None, object]]:
    """(where, None, object) of each built-in "module:attribute", in the form
    :func:`entry_point_objects` gives the plug-ins (a built-in has no entry point name)."""
    found = []
    for where in dotted:
        module, _, attr = where.partition(":")
        found.append((where, None, getattr(importlib.import_module(module), attr)))
    return found


def by_name(
    found: Iterable[tuple[str, str | None, object]],
    check: Callable[[object, str, str | None], T],
    what: str,
) -> dict[str, T]:
    """{name: checked plug-in} of (where, entry point name, object) triples, each passed
    through ``check``; a RuntimeError naming both places where a name is registered twice."""
    out: dict[str, T] = {}
    where_of: dict[str, str] = {}
    for where, entry_name, obj in found:
        item = check(obj, where, entry_name)
        if item.name in out:
            raise RuntimeError(
                f"{what} {item.name!r} of {where} is registered twice (already by "
                f"{where_of[item.name]}); give it another name"
            )
        out[item.name], where_of[item.name] = item, where
    return out


def name_problems(name: object, entry_name: str | None, pattern: re.Pattern) -> list[str]:
    """What is wrong with a plug-in's name: not matching ``pattern`` (lower-case letters,
    digits, - or _), or not its entry point's name; [] if nothing."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        return [f"name {name!r} must be lower-case letters, digits, - or _"]
    if entry_name is not None and name != entry_name:
        return [f"name {name!r} is not its entry point's name {entry_name!r}"]
    return []
