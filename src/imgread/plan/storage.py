"""Which storage profiles this machine can emulate: asked when a run starts, never while the
Snakefile is parsed or a dry run plans (asking runs commands: ``ip netns add``, ``nginx -v``,
a trial cgroup made and removed).

Every cell on a profile is planned wherever the run is. A real run's ``storage_check`` job
asks the profile's kind once (:func:`check_profile`) and writes the answer where the
profile's trials read it; a trial on a profile this machine cannot emulate writes a skip
record (:func:`skip_record`) in place of its measurement. The tables leave skip records out
(:func:`split_records`), and the answer says "not measured" in one line per profile, as
:func:`skipped_storage` words it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from imgread.plan.grid import storage_profiles, used_storage
from imgread.plan.searches import searched_storage
from imgread.storage import registry as storage
from imgread.util import write_json_atomic

SKIPPED = "skipped"  # the key a skip record has (and a measured record never has)
# The settings a storage kind's check reads (IMGREAD_NGINX: the http kind's server)
STORAGE_ENV = ("IMGREAD_NGINX",)


def checked_profiles(config: dict) -> list[str]:
    """The profiles whose trials wait for a storage check: every one a cell or a search
    (imgread.plan.searches) reads but ``local`` (the study's storage, always there: its
    trials depend on no check, as before)."""
    searched = {searched_storage(s) for s in config.get("searches") or []}
    return sorted(name for name in used_storage(config) | searched if name != storage.DEFAULT)


def needs_check(params: dict) -> str | None:
    """The profile a cell's trial waits for a check of, or None (local, or no storage)."""
    name = params.get("storage")
    return name if name and name != storage.DEFAULT else None


def machine_key() -> dict:
    """What the answer of a check may change with, as found without running anything: the
    user and the settings the kinds read (:data:`STORAGE_ENV`). A change asks the checks
    again, and reruns the trials of the profiles checked."""
    uid = os.geteuid() if hasattr(os, "geteuid") else -1
    env = {k: os.environ[k] for k in STORAGE_ENV if k in os.environ}
    return {"uid": uid, "env": env}


def _line(name: str, kind: str, why: str) -> str:
    return f"{name} ({kind}) not measured: {why}"


def check_profile(profile: dict) -> dict:
    """Ask the profile's kind whether this machine can emulate it (runs its commands):
    {profile, kind, missing (why not, or None), line (the "not measured" line, or None)}."""
    name, kind = profile["name"], profile["kind"]
    why = storage.get_kind(kind).missing()
    return dict(profile=name, kind=kind, missing=why, line=_line(name, kind, why) if why else None)


def write_check(path: str | os.PathLike, result: dict) -> None:
    """The check's answer, as the profile's trials read it."""
    write_json_atomic(Path(path), result, indent=2)


def read_check(path: str | os.PathLike) -> dict:
    """A check's answer (:func:`check_profile`), from the file the storage_check job wrote."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def skip_record(check: dict) -> dict:
    """The record a trial writes where its profile cannot be emulated here: why, no time."""
    return {SKIPPED: check["line"], "storage": check["profile"], "storage_kind": check["kind"]}


def variant_skip_record(phase: str, variant: str, why: str) -> dict:
    """The record a trial writes where its variant's library is not installed here."""
    return {SKIPPED: f"{phase} {variant} not measured: {why}", "phase": phase, "variant": variant}


def line_skip_record(line: str, **fields) -> dict:
    """The record a trial writes in place of a measurement, saying why in one line (a
    decoder that refuses some of the dataset's kept images: imgread.dataset.refused)."""
    return {SKIPPED: line, **fields}


def split_records(paths: list[str]) -> tuple[list[str], list[str]]:
    """(measured record paths, the distinct "not measured" lines of the skip records)."""
    measured, lines = [], {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        record = json.loads(text) if f'"{SKIPPED}"' in text else {}
        if SKIPPED in record:
            lines[record[SKIPPED]] = None
        else:
            measured.append(path)
    return measured, list(lines)


def skipped_storage(config: dict) -> dict[str, str]:
    """{profile: one line saying why it is not measured here} for the profiles the grid uses
    that this machine cannot emulate (no root, no nginx, no cgroup). Asks every kind: call it
    when a run starts or in a job, never while the Snakefile is parsed."""
    profiles = storage_profiles(config)
    used = {name: profiles[name] for name in sorted(used_storage(config)) if name in profiles}
    return storage.unavailable(used)
