"""The storage kinds, selected by name from the config's ``storage:`` profiles.

Built-in kinds are listed in ``BUILTIN`` (one module each, exposing ``KIND``). A profile named
``local`` of kind ``local`` always exists: it is the study's storage and every grid's default.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from imgread.errors import TrialError, UserError
from imgread.storage.base import Kind, Probe, Profile, Session

BUILTIN = (
    "imgread.storage.local",
    "imgread.storage.volume",
    "imgread.storage.http",
    "imgread.storage.memory",
)
DEFAULT = "local"
DEFAULT_CLIENT = "imgread"  # the storage client a session reads with unless told
# A probed bandwidth may exceed the cap by this factor (the probe's own counting) before the
# emulation counts as broken; one below the cap is this machine's limit, recorded as it is.
BANDWIDTH_SLACK = 1.10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


def _load() -> dict[str, Kind]:
    kinds = {}
    for module in BUILTIN:
        kind = importlib.import_module(module).KIND
        if not isinstance(kind, Kind) or not kind.name:
            raise TypeError(f"{module}.KIND is not a named imgread.storage.base.Kind")
        kinds[kind.name] = kind
    return kinds


KINDS: dict[str, Kind] = _load()


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(
            f"unknown storage kind {name!r}; choose one of {', '.join(KINDS)}"
        ) from None


def counts_change(profile: Profile, before: dict | None, after: dict) -> dict:
    """The change of the profile's session counts over a trial's clock, as record columns
    (:meth:`Kind.counts_change`)."""
    return get_kind(profile.kind).counts_change(before, after)


def counts_line(profile: Profile, counts: dict | None) -> str:
    """``" (the transport: <the kind's words>)"`` for a failed trial's message, where the kind
    has something to say of ``counts`` (:meth:`Kind.describe_counts`); "" otherwise."""
    text = get_kind(profile.kind).describe_counts(counts)
    return f" (the transport: {text})" if text else ""


def parse_profiles(entries) -> dict[str, Profile]:
    """The config's ``storage:`` list as {name: Profile}, ``local`` included; UserError with
    one line naming the field for a wrong type, an unknown kind or name, or a bad value."""
    profiles = {DEFAULT: Profile(DEFAULT, "local", {})}
    if entries is None:
        return profiles
    if not isinstance(entries, list):
        raise UserError(f"storage must be a list of profiles, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"storage[{i}] must be a mapping with name and kind, got {entry!r}")
        entry = dict(entry)
        name, kind = entry.pop("name", None), entry.pop("kind", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise UserError(
                f"storage[{i}].name must be lower-case letters, digits, '.', '_' or '-' "
                f"(at most 40), got {name!r}"
            )
        if not isinstance(kind, str):
            raise UserError(
                f"storage profile {name!r}: kind is required (one of {', '.join(KINDS)})"
            )
        if kind not in KINDS:
            raise UserError(
                f"storage profile {name!r}: unknown storage kind {kind!r}; "
                f"choose one of {', '.join(KINDS)}"
            )
        profile = KINDS[kind].check(name, entry)  # its errors name the profile and field
        if name in profiles and not (name == DEFAULT and profile == profiles[DEFAULT]):
            raise UserError(f"storage profile {name!r} is defined twice")
        profiles[name] = profile
    return profiles


def profile_from(data: dict[str, Any] | None) -> Profile:
    """A Profile from its dict form (a trial spec carries it so)."""
    if not data:
        return Profile(DEFAULT, "local", {})
    data = dict(data)
    name, kind = data.pop("name"), data.pop("kind")
    return get_kind(kind).check(name, data)


def unavailable(profiles: dict[str, Profile]) -> dict[str, str]:
    """{profile name: why this machine cannot measure it} for the profiles it cannot."""
    out = {}
    for name, profile in profiles.items():
        why = get_kind(profile.kind).missing()
        if why:
            out[name] = f"{name} ({profile.kind}) not measured: {why}"
    return out


def sweep() -> list[str]:
    """Remove every kind's leftovers from earlier, killed runs; a line per thing removed."""
    removed = []
    for kind in KINDS.values():
        if kind.missing() is None:
            removed.extend(kind.sweep())
    return removed


def check_probe(profile: Profile, probe: Probe) -> None:
    """TrialError where the emulation does not hold (:func:`probe_fault`): no time recorded."""
    fault = probe_fault(profile, probe)
    if fault is not None:
        raise TrialError(fault)


def probe_fault(profile: Profile, probe: Probe) -> str | None:
    """Why the probe says the emulation does not hold (a bandwidth over the cap by more than
    BANDWIDTH_SLACK, a latency off the profile's by more than the kind's tolerance), or None."""
    kind = get_kind(profile.kind)
    cap = kind.bandwidth_cap_mb_per_s(profile)
    if cap and probe.bandwidth_mb_per_s and probe.bandwidth_mb_per_s > cap * BANDWIDTH_SLACK:
        return (
            f"storage {profile.name}: probed bandwidth {probe.bandwidth_mb_per_s:.1f} MB/s is "
            f"above the profile's cap of {cap:g} MB/s; the throttle does not hold, no time "
            "recorded"
        )
    expected = kind.expected_latency_ms(profile)
    if expected is None or probe.latency_ms is None:
        return None
    rel, floor = kind.latency_tolerance
    allowed = max(rel * expected, floor)
    if abs(probe.latency_ms - expected) > allowed:
        return (
            f"storage {profile.name}: probed latency {probe.latency_ms:.2f} ms is off the "
            f"profile's {expected:g} ms by more than {allowed:.2f} ms; the emulation does not "
            "hold, no time recorded"
        )
    return None


PROBE_ATTEMPTS = 4
PROBE_PAUSE_S = 0.5  # then 1 s, then 1.5 s: at most 3 s of waiting before a trial is refused


def _probed(opened: Session, profile: Profile) -> Probe:
    """The session's probe, checked against the profile. A probe off the profile is taken
    again (at most PROBE_ATTEMPTS in all, PROBE_PAUSE_S x the attempts so far apart: a few
    seconds' disturbance of a shared machine is not a broken emulation); the attempts are
    recorded (``probe_attempts``)."""
    fault = None
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        if attempt > 1:
            time.sleep(PROBE_PAUSE_S * (attempt - 1))
        t0 = time.perf_counter()
        probe = opened.probe()
        seconds = probe.seconds or time.perf_counter() - t0
        probe = replace(probe, seconds=seconds, detail={**probe.detail, "attempts": attempt})
        fault = probe_fault(profile, probe)
        if fault is None:
            return probe
    raise TrialError(fault)


@contextlib.contextmanager
def session(
    profile: Profile, root: Path, client: str = DEFAULT_CLIENT
) -> Iterator[tuple[Session, Probe]]:
    """The profile's kind set up over ``root``, read through storage client ``client`` (kinds
    that take clients: http), probed (latency checked), and torn down on every way out of the
    block (an exception, SystemExit from SIGTERM, Ctrl-C)."""
    kind = get_kind(profile.kind)
    why = kind.missing()
    if why:
        raise UserError(f"storage {profile.name} ({profile.kind}) cannot run here: {why}")
    if client != DEFAULT_CLIENT and not getattr(kind, "takes_clients", False):
        raise UserError(
            f"storage {profile.name} ({profile.kind}) reads its files where they are: storage "
            f"client {client!r} reads kind http's object store only; use client {DEFAULT_CLIENT}"
        )
    if getattr(kind, "takes_clients", False):
        opened = kind.open(profile, Path(root), client)
    else:
        opened = kind.open(profile, Path(root))
    try:
        yield opened, _probed(opened, profile)
    finally:
        opened.close()
