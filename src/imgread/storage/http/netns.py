"""Network namespaces, veth pairs and a tc tbf cap, for storage kinds that serve the dataset
from a real server on the same machine (kind ``http``).

Every name carries the creating process's pid, so that a later run can tell the leftovers of
a killed trial (its creator is dead) from what a live trial still uses:

- namespace ``imgread-<pid>-<n>``;
- veth pair ``imr<pid>h<n>`` (host end) / ``imr<pid>n<n>`` (namespace end), at most 15 chars;
- a private /30 inside 10.213.0.0/16: host end .1, namespace end .2, nothing routed further.

Everything here shells out to ``ip`` and ``tc`` (iproute2) with bounded timeouts.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from imgread.instruments.memcg import alive as pid_alive  # the package's one liveness check

NS_PREFIX = "imgread-"
NS_PATTERN = re.compile(r"^imgread-(\d+)-(\d+)$")
LINK_PATTERN = re.compile(r"^imr(\d+)[hn](\d+)$")
POOL = ipaddress.ip_network("10.213.0.0/16")
COMMAND_TIMEOUT_S = 10.0
_LOCK_PATHS = ("/run/lock/imgread-netns.lock", "/run/imgread-netns.lock", "/tmp/imgread-netns.lock")
_counter = itertools.count()
_counter_lock = threading.Lock()


class NetnsError(OSError):
    """An ``ip`` or ``tc`` command failed; the message holds the command and its stderr."""


def run(args: list[str], check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command; its stdout, or NetnsError naming the command and its stderr."""
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{' '.join(args)}: no answer in {timeout:g} s") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    """The names ``ip netns list`` shows."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> list[str]:
    """The names of this (host) namespace's network links, without their ``@peer`` suffix."""
    out = run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def pids_in(ns: str) -> list[int]:
    """The processes running inside namespace ``ns`` (empty where it is gone)."""
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def kill_all_in(ns: str, timeout: float = 3.0) -> list[int]:
    """SIGKILL every process in namespace ``ns``; wait (bounded) until they are gone."""
    killed = []
    for pid in pids_in(ns):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    deadline = time.monotonic() + timeout
    while killed and time.monotonic() < deadline and pids_in(ns):
        time.sleep(0.02)
    return killed


def delete_namespace(ns: str) -> bool:
    """Delete namespace ``ns`` (its veth end goes with it, and the host end with that); False
    where it was already gone."""
    if ns not in namespaces():
        return False
    run(["ip", "netns", "delete", ns], check=False)
    return True


def delete_link(name: str) -> bool:
    """Delete host link ``name`` (a veth: its peer goes too); False where it was already gone."""
    if name not in links():
        return False
    run(["ip", "link", "delete", name], check=False)
    return True


def used_networks() -> set[ipaddress.IPv4Network]:
    """The /30s of POOL that an address in the host namespace already sits in."""
    out = run(["ip", "-o", "-4", "addr", "show"], check=False)
    used = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/\d+", out):
        addr = ipaddress.ip_address(match.group(1))
        if addr in POOL:
            used.add(ipaddress.ip_network(f"{addr}/30", strict=False))
    return used


@contextlib.contextmanager
def _allocation_lock():
    """A host-wide lock around picking and assigning a /30, so two creators never pick one."""
    for path in _LOCK_PATHS:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        return
    yield  # no writable lock path: the used-address check alone


def pick_network(pid: int, n: int, used: set) -> ipaddress.IPv4Network:
    """A free /30 of POOL, starting from one derived from the creator's pid and counter."""
    subnets = POOL.num_addresses // 4
    start = (pid * 8 + n) % subnets
    for step in range(subnets):
        index = (start + step) % subnets
        net = ipaddress.ip_network(f"{POOL.network_address + index * 4}/30")
        if net not in used:
            return net
    raise NetnsError(f"no free /30 left in {POOL}")


@dataclass
class Link:
    """A namespace joined to the host by a veth pair; ``close`` undoes it all."""

    ns: str
    host_if: str
    ns_if: str
    host_address: str
    ns_address: str
    qdisc: str = ""

    def tc_show(self) -> str:
        """``tc qdisc show`` of the namespace end, as one line."""
        out = run(["ip", "netns", "exec", self.ns, "tc", "qdisc", "show", "dev", self.ns_if])
        return " ".join(out.split())

    def close(self) -> None:
        """Kill what runs inside, delete the namespace and the host end; never raises."""
        with contextlib.suppress(OSError):
            kill_all_in(self.ns)
        with contextlib.suppress(OSError):  # the pair goes at once (namespace cleanup is lazy)
            delete_link(self.host_if)
        with contextlib.suppress(OSError):
            delete_namespace(self.ns)


def tbf_args(rate_mbit: float) -> list[str]:
    """tc tbf parameters for ``rate_mbit``: a bucket of 1 ms at the rate (at least 4 KiB, more
    than a full frame), and a queue of 50 ms at the rate beyond it.

    Not rate/HZ: tbf waits on an hrtimer, not the tick, so a small bucket still reaches the
    rate (10 Gbit/s measured with 0.5 ms). A bucket as big as the gap between requests refills
    during each request's latency and lets a small object through at line speed: with 10 ms,
    a 100 KB GET at 100 Mbit/s and 20 ms took 21.1 ms; with 1 ms, 28.2 ms (a real link: 28)."""
    rate_bytes = rate_mbit * 1e6 / 8
    burst = int(max(rate_bytes * 0.001, 4 * 1024))
    limit = int(burst + max(rate_bytes * 0.050, 64 * 1024))
    return ["rate", f"{rate_mbit:g}mbit", "burst", str(burst), "limit", str(limit)]


def make_link(rate_mbit: float) -> Link:
    """A fresh namespace with ``lo`` up and a veth pair to the host, the namespace end's egress
    capped at ``rate_mbit`` by tbf. Undoes what it made and raises NetnsError on a failure."""
    pid = os.getpid()
    with _counter_lock:
        n = next(_counter) % 10_000  # veth names fit 15 chars with a 7-digit pid
    link = Link(f"{NS_PREFIX}{pid}-{n}", f"imr{pid}h{n}", f"imr{pid}n{n}", "", "")
    try:
        run(["ip", "netns", "add", link.ns])
        run(["ip", "netns", "exec", link.ns, "ip", "link", "set", "lo", "up"])
        run(["ip", "link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if])
        run(["ip", "link", "set", link.ns_if, "netns", link.ns])
        with _allocation_lock():
            net = pick_network(pid, n, used_networks())
            host, peer = net.network_address + 1, net.network_address + 2
            run(["ip", "addr", "add", f"{host}/30", "dev", link.host_if])
        link.host_address, link.ns_address = str(host), str(peer)
        inside = ["ip", "netns", "exec", link.ns]
        run(inside + ["ip", "addr", "add", f"{peer}/30", "dev", link.ns_if])
        run(["ip", "link", "set", link.host_if, "up"])
        run(inside + ["ip", "link", "set", link.ns_if, "up"])
        run(inside + ["tc", "qdisc", "add", "dev", link.ns_if, "root", "tbf"] + tbf_args(rate_mbit))
        link.qdisc = link.tc_show()
    except BaseException:
        link.close()
        raise
    return link


def sweep() -> list[str]:
    """Remove namespaces and host veth links named by a creator that is no longer alive (and
    kill what still runs in them); a line per thing removed. Live creators' are left alone."""
    removed = []
    for ns in namespaces():
        match = NS_PATTERN.match(ns)
        if not match or pid_alive(int(match.group(1))):
            continue
        killed = kill_all_in(ns)
        if delete_namespace(ns):
            extra = f" (killed {len(killed)} process(es) inside)" if killed else ""
            removed.append(f"network namespace {ns} of dead pid {match.group(1)}{extra}")
    for name in links():
        match = LINK_PATTERN.match(name)
        if match and not pid_alive(int(match.group(1))) and delete_link(name):
            removed.append(f"veth link {name} of dead pid {match.group(1)}")
    return removed
