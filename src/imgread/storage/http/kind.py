"""Kind http's entry in the storage registry: its settings, the checks of a profile, what
the machine needs, the sweep of a killed trial's leftovers, and the wording of its counts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from imgread.errors import UserError
from imgread.storage import base
from imgread.storage.http import netns, server
from imgread.storage.http.retry import REQUEST_TIMEOUT_S
from imgread.storage.http.session import TEMP_PREFIX, HttpSession

# (count key, its word) of the faults the proxy injects, in the order a message names them
INJECTED = (
    ("faults_503", "503"),
    ("faults_reset", "reset"),
    ("faults_stall", "stall"),
    ("server_killed", "killed"),
)


def _later(name, type_, default, description, minimum=None, maximum=None) -> base.Setting:
    return base.Setting(name, type_, default, description, minimum, maximum, later=True)


def _temp_roots() -> list[str]:
    return [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]


SETTINGS = (
    base.Setting(
        "latency_ms",
        float,
        20.0,
        "time to first byte added per request, ms (served in whole ms)",
        minimum=1,
        maximum=10000,
    ),
    base.Setting(
        "bandwidth_mbit",
        float,
        1000.0,
        "server-to-client bandwidth cap, Mbit/s",
        minimum=1,
        maximum=100000,
    ),
    base.Setting("tls", bool, False, "serve HTTPS with a certificate made per session"),
    base.Setting("server_workers", int, 1, "nginx worker processes", minimum=1, maximum=16),
    # Added after the first http trials: left out of a trial's params at their defaults
    # The readers' retries (every reader: threads, processes, asyncio, DataLoader workers)
    _later(
        "retries",
        int,
        2,
        "retries per read after the first attempt (the AWS SDKs' standard mode: 3 attempts)",
        minimum=0,
        maximum=20,
    ),
    _later("backoff_ms", float, 50.0, "base of the exponential backoff, ms", 0, 60000),
    _later("backoff_cap_ms", float, 2000.0, "cap of one backoff wait, ms", 0, 600000),
    _later(
        "timeout_s",
        float,
        REQUEST_TIMEOUT_S,
        "per socket operation of a read (connect, each receive); asyncio readers: twice",
        0.05,
        3600,
    ),
    # Faults injected at the server (imgread.storage.http.faultproxy); all 0: no proxy at all
    _later("fault_503", float, 0.0, "fraction of requests answered 503 Slow Down", 0, 1),
    _later("fault_reset", float, 0.0, "fraction of responses reset mid-body", 0, 1),
    _later("fault_stall", float, 0.0, "fraction of responses held stall_s first", 0, 1),
    _later("stall_s", float, 5.0, "how long a stalled response is held, s", 0, 3600),
    _later("kill_after", int, 0, "the server is killed at this data request (0: never)", 0),
    _later("fault_seed", int, 0, "seed of the faults' draw", 0),
)


class HttpKind(base.Kind):
    name = "http"
    description = (
        "an object store over a network: nginx in a network namespace, per-request latency "
        "(echo_sleep) and a bandwidth cap (tc tbf) on a veth pair, optional TLS"
    )
    needs = "root, nginx with its echo module, ip and tc (iproute2); openssl for tls"
    settings = SETTINGS

    def __init__(self):
        self._missing: tuple[int, str | None] | None = None

    def check(self, name: str, params: dict[str, Any]) -> base.Profile:
        """The profile, its fault shares at most 1 in all and no faults with TLS."""
        profile = super().check(name, params)
        p = profile.params
        share = p["fault_503"] + p["fault_reset"] + p["fault_stall"]
        if share > 1:
            raise UserError(
                f"storage profile {name!r}: fault_503 + fault_reset + fault_stall must be at "
                f"most 1 (a share of the requests), got {share:g}"
            )
        if p["tls"] and server.has_faults(profile):
            raise UserError(
                f"storage profile {name!r}: faults are injected by a plain-HTTP proxy in "
                "front of nginx; use tls: false with fault_* or kill_after"
            )
        return profile

    def missing(self) -> str | None:
        """Why this machine cannot run kind http (asked once per process)."""
        if self._missing is None or self._missing[0] != os.getpid():
            self._missing = (os.getpid(), server.why_missing())
        return self._missing[1]

    takes_clients = True  # a session reads through a storage client (imgread.storage.clients)

    def open(self, profile: base.Profile, root: Path, client: str = "imgread") -> base.Session:
        """nginx in a network namespace over ``root`` (imgread.storage.http.session), read
        through storage client ``client``."""
        return HttpSession(profile, Path(root), client)

    def sweep(self) -> list[str]:
        """Dead trials' namespaces, veth pairs and temporary folders."""
        removed = netns.sweep()
        pattern = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-\d+-")
        for folder in _temp_roots():
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    match = pattern.match(entry.name)
                    if match and entry.is_dir() and not netns.pid_alive(int(match.group(1))):
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed.append(
                            f"temporary folder {entry.path} of dead pid {match.group(1)}"
                        )
        return removed

    def expected_latency_ms(self, profile: base.Profile) -> float | None:
        """The profile's latency_ms: every request waits it."""
        return float(profile.params["latency_ms"])

    def bandwidth_cap_mb_per_s(self, profile: base.Profile) -> float | None:
        """The profile's bandwidth_mbit in MB/s."""
        return float(profile.params["bandwidth_mbit"]) / 8

    def describe_counts(self, counts: dict[str, Any] | None) -> str:
        """``3 retries (503:2 reset:1), 0.21 s of backoff, 1 read(s) failed for good; the
        server saw 30 requests and injected 503 x 2, ...``: the readers' retries where any
        was made or a read failed, the proxy's faults where any was injected; "" otherwise."""
        if not counts:
            return ""
        parts = []
        if counts.get("retries") or counts.get("failed_reads"):
            parts.append(
                f"{counts.get('retries', 0)} retries ({counts.get('retry_reasons') or 'none'}), "
                f"{counts.get('retry_wait_seconds', 0.0):.2f} s of backoff, "
                f"{counts.get('failed_reads', 0)} read(s) failed for good"
            )
        injected = [f"{what} x {counts[key]}" for key, what in INJECTED if counts.get(key)]
        if injected:
            parts.append(
                f"the server saw {counts.get('server_requests', 0)} requests and injected "
                + ", ".join(injected)
            )
        return "; ".join(parts)


KIND = HttpKind()
