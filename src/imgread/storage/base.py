"""The contract of a storage kind: how a reader gets an image's bytes, how the kind is set up
and torn down around a trial, and what it needs to run.

A storage *profile* (config ``storage:``) is a name, a kind and the kind's parameters. A trial
of a reading phase (load, DataLoader, stream) takes the profile's name as its grid key
``storage``; :func:`imgread.storage.registry.session` sets the kind up before the trial's
variant starts (a cgroup to join, a server in a network namespace) and tears it down on every
exit path, after the clock. The variant reads through the session's :class:`Opener`, which
says nothing of what the bytes are: a JPEG, or a tar shard (the data layouts plug in beside).

Anchors (../shared/STYLE.md): fio's I/O engines, DLIO's storage factory, WebDataset's table of
URL schemes. One module per kind; the registry lists them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgread.errors import UserError
from imgread.util import without_later_defaults


@dataclass(frozen=True)
class Setting:
    """A parameter of a kind: its type, bounds and default (None: required)."""

    name: str
    type: type  # int, float or bool
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    # A setting added after trials were measured: left out of the profile's dict form (what a
    # trial's rule takes as a param) while it is at its default, so that those trials keep
    # their params and are not rerun.
    later: bool = False

    def check(self, profile: str, value) -> Any:
        """The value, typed; UserError naming the profile and the field otherwise."""
        field_name = f"storage profile {profile!r}: {self.name}"
        if value is None:
            if self.default is None:
                raise UserError(f"{field_name} is required ({self.description})")
            return self.default
        if self.type is bool:
            if not isinstance(value, bool):
                raise UserError(f"{field_name} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{field_name} must be a number, got {value!r}")
        if self.type is int and value != int(value):
            raise UserError(f"{field_name} must be a whole number, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise UserError(f"{field_name} must be >= {self.minimum:g}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise UserError(f"{field_name} must be <= {self.maximum:g}, got {value!r}")
        return self.type(value)


@dataclass(frozen=True)
class Profile:
    """One named storage of the config: a kind and its checked parameters."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    # (setting, default) of the kind's ``later`` settings: left out of as_dict at their default
    later_defaults: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        params = without_later_defaults(self.params, dict(self.later_defaults))
        return {"name": self.name, "kind": self.kind, **params}


@dataclass(frozen=True)
class Probe:
    """What the endpoint gave right before a trial's clock (None: not measured for this kind).

    latency_ms: median time to the first byte of several small requests; bandwidth_mb_per_s:
    over at least a second of transfer; iops: small reads per second where the kind caps them."""

    latency_ms: float | None = None
    bandwidth_mb_per_s: float | None = None
    iops: float | None = None
    seconds: float = 0.0  # how long the probe took (outside the clock)
    detail: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        return {
            "probe_latency_ms": self.latency_ms,
            "probe_bandwidth_mb_per_s": self.bandwidth_mb_per_s,
            "probe_iops": self.iops,
            "probe_seconds": self.seconds,
            **{f"probe_{k}": v for k, v in self.detail.items()},
        }


class Opener:
    """How a reader gets an image's bytes, given the image's path under the dataset's root.

    Picklable: a process pool's workers, DataLoader workers and stream producers each receive
    it and open their own connections (``read`` keeps one per thread and process, so a pool of
    N threads has a connection pool of N). ``async_reader(limit)`` is the asyncio form: an
    object with ``async read(path)`` and ``async close()``, at most ``limit`` requests in
    flight (0: no limit), made inside the running event loop."""

    local_files = False  # True: the path itself may be opened where it is (kind local)

    def read(self, path: str) -> bytes:
        raise NotImplementedError

    def async_reader(self, limit: int):
        raise NotImplementedError

    def close(self) -> None:
        """Close this process's connections (no-op where there are none)."""


class PerThread:
    """A value made lazily once per (process, thread), for openers' connections. Not pickled:
    a forked or spawned worker makes its own."""

    def __init__(self, make):
        self.make = make
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def get(self):
        value = getattr(self._local, "value", None)
        if value is None or self._local.pid != os.getpid():
            value = self.make()
            self._local.value, self._local.pid = value, os.getpid()
            with self._lock:
                self._all.append((os.getpid(), value))
        return value

    def each(self):
        """Every value this process made (to close them)."""
        with self._lock:
            mine = [v for pid, v in self._all if pid == os.getpid()]
            self._all = [(p, v) for p, v in self._all if p != os.getpid()]
        return mine

    def __getstate__(self):
        return {"make": self.make}

    def __setstate__(self, state):
        self.__init__(state["make"])


class Session:
    """A kind set up for one trial: made before the variant starts, closed after the clock
    (and on every exit path). ``opener`` is how the variant reads."""

    opener: Opener

    def settings(self) -> dict[str, Any]:
        """The emulation's own settings, for the record (qdisc, server version, read_ahead_kb)."""
        return {}

    def probe(self) -> Probe:
        """Measure what the endpoint gives (outside the clock)."""
        return Probe()

    def server_cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the server processes (None where there is no server)."""
        return None

    def counts(self) -> dict[str, Any]:
        """What the transport did so far, as counters (retries, faults the server injected);
        the trial records their change over its timed region. {} where nothing is counted."""
        return {}

    def close(self) -> None:
        """Tear down whatever the session made; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def counts_change(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The change of a session's counts (:meth:`Session.counts`) from ``before`` (None: from
    the session's start) to ``after``: numbers subtracted; a breakdown ({reason: count})
    subtracted key by key and written as text for the record (``"503:3 reset:2"``); anything
    else as it is after."""
    out = {}
    for key, value in after.items():
        was = (before or {}).get(key)
        if isinstance(value, dict):
            left = {k: n - (was or {}).get(k, 0) for k, n in sorted(value.items())}
            out[key] = " ".join(f"{k}:{n}" for k, n in left.items() if n > 0)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value - (was or 0)
        else:
            out[key] = value
    return out


class Kind:
    """One kind of storage. Subclasses set the attributes and implement ``open``."""

    name: str = ""
    description: str = ""
    settings: tuple[Setting, ...] = ()
    needs: str = ""  # what it needs to run, in words (root, nginx, ...)
    # How far a probed latency may be off the profile's before the trial fails:
    # max(relative x profile latency, absolute ms).
    latency_tolerance: tuple[float, float] = (0.25, 2.0)

    def check(self, name: str, params: dict[str, Any]) -> Profile:
        """The profile with typed, bounded parameters; UserError naming the field otherwise."""
        params = dict(params)
        out = {s.name: s.check(name, params.pop(s.name, None)) for s in self.settings}
        if params:
            raise UserError(
                f"storage profile {name!r}: unknown field(s) {sorted(params)} for kind "
                f"{self.name!r}; it takes {[s.name for s in self.settings] or 'none'}"
            )
        later = tuple((s.name, s.default) for s in self.settings if s.later)
        return Profile(name, self.name, out, later)

    def missing(self) -> str | None:
        """Why this machine cannot run this kind (one line), or None where it can."""
        return None

    def open(self, profile: Profile, root: Path) -> Session:
        """Set the kind up for one trial over the dataset under ``root``."""
        raise NotImplementedError

    def sweep(self) -> list[str]:
        """Remove what earlier runs of this kind left behind (a killed trial cannot clean up
        after itself: its namespaces, servers, cgroups); return a line per thing removed.
        Must leave alone what a live trial still uses."""
        return []

    def expected_latency_ms(self, profile: Profile) -> float | None:
        """The per-request latency the profile promises (None: not promised)."""
        return None

    def bandwidth_cap_mb_per_s(self, profile: Profile) -> float | None:
        """The bandwidth the profile caps at, in MB/s (None: no cap)."""
        return None

    def counts_change(self, before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
        """The change of a session's counts over a trial's timed region, as the record's
        columns (the module's :func:`counts_change` unless the kind counts otherwise)."""
        return counts_change(before, after)

    def describe_counts(self, counts: dict[str, Any] | None) -> str:
        """That change in the kind's words, for the message of a trial that failed ("" where
        there is nothing to say: the default, for kinds that count nothing)."""
        return ""
