"""Kind http's server processes inside the session's network namespace: nginx, and the fault
proxy in front of it (imgread.storage.http.faultproxy), started, waited for, measured (CPU
seconds) and stopped, each bounded in time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imgread.storage.http import netns
from imgread.storage.http.retry import REQUEST_TIMEOUT_S
from imgread.storage.http.server import START_TIMEOUT_S, STOP_TIMEOUT_S, UPSTREAM_PORT, which


def _package_root() -> str:
    """The folder holding the imgread package, for the proxy run under ``ip netns exec``."""
    import imgread

    return str(Path(imgread.__file__).resolve().parent.parent)


def read_text(path: str) -> str | None:
    """A file's text, or None where it cannot be read."""
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def accepts(address: str, port: int) -> bool:
    """Whether something accepts a connection on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


def refuse_a_taken_port(profile: str, link: netns.Link, who: str, port: int, log: str) -> None:
    """OSError naming the port where ``who``'s log says another process holds it (the
    namespace is the session's own, so only something started inside it could)."""
    if "address already in use" in log.lower():  # nginx's and Python's wording
        raise OSError(
            f"storage {profile}: {who} cannot listen on "
            f"{link.ns_address}:{port}: the port is already in use inside the "
            f"session's network namespace {link.ns} (another process listens there; "
            "the session is torn down, nothing is left)"
        )


def log_tail(temp: Path | None) -> str:
    """The last lines of nginx's error log and stderr, for an error message."""
    text = ""
    for name in ("error.log", "nginx.stderr"):
        if temp is not None:
            text += read_text(str(temp / name)) or ""
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-5:]) or "(nothing in its error log)"


def spawn_nginx(temp: Path, link: netns.Link, conf: Path) -> subprocess.Popen:
    """nginx started inside the namespace on ``conf`` (not yet waited for: :func:`await_nginx`)."""
    nginx = which("nginx") or "nginx"
    stderr = open(temp / "nginx.stderr", "wb")  # noqa: SIM115 (the child keeps it)
    with stderr:
        return subprocess.Popen(
            ["ip", "netns", "exec", link.ns, nginx, "-p", str(temp)]
            + ["-e", str(temp / "error.log"), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # a Ctrl-C to the trial does not reach it first
        )


def await_nginx(proc: subprocess.Popen, profile: str, temp: Path, link: netns.Link, port: int):
    """Return once nginx accepts connections on ``port``; OSError with its log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        refuse_a_taken_port(profile, link, "nginx", port, read_text(str(temp / "error.log")) or "")
        if proc.poll() is not None:
            raise OSError(
                f"storage {profile}: nginx exited at start "
                f"(status {proc.returncode}): {log_tail(temp)}"
            )
        # nginx writes its pid file once it holds its sockets: a connect alone could reach
        # whatever else listens there
        if (temp / "nginx.pid").exists() and accepts(link.ns_address, port):
            return
        if time.monotonic() > deadline:
            raise OSError(
                f"storage {profile}: nginx did not accept connections on "
                f"{link.ns_address}:{port} within {START_TIMEOUT_S:g} s: "
                f"{log_tail(temp)}"
            )
        time.sleep(0.02)


def spawn_proxy(
    temp: Path, link: netns.Link, port: int, params: dict[str, Any], nginx_pid: int
) -> subprocess.Popen:
    """The fault proxy (imgread.storage.http.faultproxy) on the namespace's address, in front
    of nginx; it may kill nginx's process group (``kill_after``). Not yet waited for."""
    stderr = open(temp / "proxy.stderr", "wb")  # noqa: SIM115 (the child keeps it)
    args = [
        "ip", "netns", "exec", link.ns, sys.executable, "-m",
        "imgread.storage.http.faultproxy",
        "--listen", f"{link.ns_address}:{port}",
        "--upstream", f"{link.ns_address}:{UPSTREAM_PORT}",
        "--log", str(temp / "requests.log"),
        "--ready", str(temp / "proxy.ready"),
        "--seed", str(params["fault_seed"]),
        "--p503", repr(params["fault_503"]),
        "--reset", repr(params["fault_reset"]),
        "--stall", repr(params["fault_stall"]),
        "--stall-s", repr(params["stall_s"]),
        "--kill-after", str(params["kill_after"]),
        "--kill-pgid", str(nginx_pid),
        "--upstream-timeout", repr(REQUEST_TIMEOUT_S),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": _package_root()}
    with stderr:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env=env,
        )


def await_proxy(proc: subprocess.Popen, profile: str, temp: Path, link: netns.Link, port: int):
    """Return once the proxy is ready and accepts on ``port``; OSError with its stderr else."""
    deadline = time.monotonic() + START_TIMEOUT_S * 2
    ready = temp / "proxy.ready"
    while not (ready.exists() and accepts(link.ns_address, port)):
        tail = read_text(str(temp / "proxy.stderr")) or ""
        refuse_a_taken_port(profile, link, "the fault proxy", port, tail)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise OSError(
                f"storage {profile}: the fault proxy did not start: "
                f"{tail.strip()[-500:] or '(nothing on its stderr)'}"
            )
        time.sleep(0.05)


def _cpu_seconds(pid: str, stat: str, children: bool) -> float:
    """A process's CPU so far: its scheduler's run time in ns (/proc/<pid>/schedstat) where
    the kernel keeps it, else utime + stime in clock ticks (10 ms: a server that works in
    bursts shorter than a tick can show none for a whole short trial); with ``children``, the
    workers it already reaped (cutime + cstime, ticks only)."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = 0
    ran = read_text(f"/proc/{pid}/schedstat")
    own = int(ran.split()[0]) / 1e9 if ran and ran.split() else None
    if own is None:
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: workers already reaped
    return (own or 0.0) + ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(proc: subprocess.Popen | None) -> float | None:
    """CPU of the nginx master and its live workers so far (and of workers it reaped); None
    where it is not running."""
    if proc is None or proc.poll() is not None:
        return None
    master = proc.pid
    stat = read_text(f"/proc/{master}/stat")
    if stat is None:
        return None
    total = _cpu_seconds(str(master), stat, children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name == str(master):
            continue
        stat = read_text(f"/proc/{entry.name}/stat")
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == master:
            total += _cpu_seconds(entry.name, stat, children=False)
    return total


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; never raises for a process already gone."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
