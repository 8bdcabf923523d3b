"""Kind ``http``: an object store over a network, emulated on this machine.

The dataset's folder is served by a real nginx inside a network namespace the session makes,
reached from the trial through a veth pair whose server-to-client direction is capped by
``tc tbf`` at the profile's bandwidth; nginx's echo module holds each request for the profile's
latency (``echo_sleep``) before the file is sent (``echo_exec`` to a named location). The
kernel has no netem here, and a sleep in the server is what a remote store's time to first
byte is made of anyway. Readers fetch ``GET /<path under the dataset root>`` over keep-alive
HTTP/1.1 (http.client per thread and process; aiohttp for asyncio), optionally over TLS with a
certificate the session makes and the client trusts alone (verification is never turned off).

Everything is made before the trial's clock and torn down after it (``close``), on every way
out; a killed trial's leftovers are named after its pid and removed by ``sweep``
(imgread.storage.http.netns).

Cold cache: the server runs on this kernel, so its page cache is the host's. The trial's
cold-cache proof on the dataset's files (evicted, then checked with mincore) therefore covers
what nginx reads too: nothing is served from memory that the proof did not see. The probe's own
files live in the session's temporary folder (on /dev/shm where there is one), so the probe
measures the network and the server, not a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import http.client
import itertools
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imgread.errors import UserError
from imgread.storage import base
from imgread.storage.http import faultproxy, netns

PORT = 8080  # plain HTTP; the namespace is private, so a fixed port cannot clash
UPSTREAM_PORT = 8081  # nginx's port behind the fault proxy (same namespace address)
TLS_PORT = 8443
PROBE_PREFIX = "/__imgread_probe__/"
PROBE_SMALL, PROBE_BIG = "one-byte", "big"
REQUEST_TIMEOUT_S = 30.0  # per socket operation: nothing can hang a reader
ASYNC_TIMEOUT_FACTOR = 2.0  # asyncio readers: x the profile timeout_s (see AsyncHttpReader)
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0
# A self-signed EC certificate for the namespace's address (subjectAltName added per session)
OPENSSL_REQ = (
    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    "-subj /CN=imgread-http"
)
TEMP_PREFIX = "imgread-http-"  # + <creator pid>-<n>-<random>: sweep tells a dead creator's
ECHO_MODULES = (
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "/usr/lib64/nginx/modules/ngx_http_echo_module.so",
    "/usr/share/nginx/modules/ngx_http_echo_module.so",
)
_counter = itertools.count()
_counter_lock = threading.Lock()
FAULT_SETTINGS = ("fault_503", "fault_reset", "fault_stall", "kill_after")


def has_faults(profile: base.Profile) -> bool:
    """Whether the profile injects any fault (so runs the fault proxy)."""
    return any(profile.params.get(k) for k in FAULT_SETTINGS)


def _package_root() -> str:
    """The folder holding the imgread package, for the proxy run under ``ip netns exec``."""
    import imgread

    return str(Path(imgread.__file__).resolve().parent.parent)


# --------------------------------------------------------------------------- what it needs


def _which(name: str) -> str | None:
    if name == "nginx" and os.environ.get("IMGREAD_NGINX"):  # a server of your own choosing
        return shutil.which(os.environ["IMGREAD_NGINX"])
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def echo_module() -> str | None:
    """The path of nginx's echo module, or None where it is not installed."""
    return next((p for p in ECHO_MODULES if os.path.exists(p)), None)


@functools.cache
def nginx_version() -> str:
    """``nginx/1.22.1`` as ``nginx -v`` says (stderr)."""
    done = subprocess.run(
        [_which("nginx") or "nginx", "-v"], capture_output=True, text=True, timeout=10
    )
    match = re.search(r"nginx/\S+", done.stderr + done.stdout)
    return match.group(0) if match else "nginx/unknown"


@functools.cache
def _nginx_without() -> frozenset[str]:
    """The http modules this nginx was built without (their temp-path directives are unknown)."""
    done = subprocess.run(
        [_which("nginx") or "nginx", "-V"], capture_output=True, text=True, timeout=10
    )
    return frozenset(re.findall(r"--without-http_(\w+)_module", done.stderr + done.stdout))


def why_missing() -> str | None:
    """Why this machine cannot run kind http (one line), or None."""
    if os.geteuid() != 0:
        return f"needs root to make a network namespace (running as uid {os.geteuid()})"
    if _which("nginx") is None or echo_module() is None:
        return (
            "nginx and its echo module are not installed: make setup installs them as root "
            "(apt install nginx-light libnginx-mod-http-echo)"
        )
    for tool in ("ip", "tc"):
        if _which(tool) is None:
            return f"the {tool!r} command (iproute2) is not installed: apt install iproute2"
    # Root is not always enough (a container without CAP_SYS_ADMIN, a SLURM job step): try.
    probe = f"imgread-{os.getpid()}-999999"  # swept like a session's if this process dies
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        where = (
            f"inside SLURM job {os.environ['SLURM_JOB_ID']}: "
            if "SLURM_JOB_ID" in os.environ
            else ""
        )
        why = made.stderr.strip() or "ip netns add failed"
        return f"{where}cannot make a network namespace ({why})"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


# --------------------------------------------------------------------------- the reader


def _connect(
    address: str, port: int, cafile: str | None, timeout_s: float = REQUEST_TIMEOUT_S
) -> http.client.HTTPConnection:
    """A keep-alive connection to the session's server (connects on the first request)."""
    if cafile is None:
        return http.client.HTTPConnection(address, port, timeout=timeout_s)
    context = ssl.create_default_context(cafile=cafile)  # trusts exactly the session's cert
    return http.client.HTTPSConnection(address, port, timeout=timeout_s, context=context)


RETRY_STATUS = (500, 502, 503, 504)  # what the S3 SDKs retry among answers (and no answer)


class ReadFailed(OSError):
    """A read that failed for good: its last reason, after every attempt the policy allows."""


class _Retryable(OSError):
    """One attempt failed in a way a store's client retries; ``reason`` is its short name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _check(url: str, status: int, length: str | int | None, body_len: int) -> None:
    if status == 404:
        raise FileNotFoundError(f"GET {url}: HTTP 404 (no such object)")
    if status == 403:
        raise PermissionError(
            f"GET {url}: HTTP 403 (the server's workers run as the dataset root's owner: "
            "can that user reach and read this file?)"
        )
    if status in RETRY_STATUS:
        raise _Retryable(str(status), f"GET {url}: HTTP {status}")
    if status != 200:
        raise OSError(f"GET {url}: HTTP {status}")
    if length is None or int(length) != body_len:
        raise _Retryable(
            "short-body", f"GET {url}: short body, {body_len} bytes of Content-Length {length}"
        )


def _reason(exc: BaseException) -> str:
    """The short name of a failed attempt, for the counts (aiohttp's connection errors carry
    the OSError they wrap as ``os_error``)."""
    if isinstance(exc, _Retryable):
        return exc.reason
    exc = getattr(exc, "os_error", None) or exc
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):  # socket.timeout and asyncio's (aiohttp's too) are one
        return "timeout"
    if isinstance(exc, http.client.IncompleteRead):
        return "short-body"
    return "reset"  # reset, closed, broken pipe: the connection went away


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, as the AWS SDKs' standard mode retries:
    after the k-th failed attempt (k = 0, 1, ...) wait uniform(0, min(cap, base x 2^k)), at
    most ``retries`` times. Each retry and each read that fails for good is one line in
    ``log`` (``<pid> retry|fail <reason> <seconds waited>``), so that the session counts
    them across every process and thread of a trial after the clock; a read that needs no
    retry writes nothing."""

    retries: int = 2
    base_ms: float = 50.0
    cap_ms: float = 2000.0
    timeout_s: float = REQUEST_TIMEOUT_S
    log: str | None = None

    def wait_s(self, k: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_ms, self.base_ms * 2**k)) / 1000.0

    def note(self, what: str, reason: str, waited: float) -> None:
        if self.log is None:
            return
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {what} {reason} {waited:.6f}\n".encode())
        finally:
            os.close(fd)

    def backoff(self, url: str, exc: _Retryable, k: int, waited: float, rng) -> float:
        """After failed attempt ``k`` (0, 1, ...) with ``waited`` seconds of backoff so far:
        the wait before the next attempt, noted as a retry; ReadFailed (noted as a read that
        failed for good) where it was the last attempt the policy allows."""
        if k >= self.retries:
            self.note("fail", exc.reason, 0.0)
            raise ReadFailed(
                f"GET {url} failed after {k + 1} attempt(s) ({k} retries of the profile's "
                f"{self.retries}, {waited:.2f} s of backoff): {exc}"
            ) from exc
        wait = self.wait_s(k, rng)
        self.note("retry", exc.reason, wait)
        return wait


def read_retry_log(path: str | None) -> dict[str, Any]:
    """The counts of a policy's log: retries (and {reason: retries}), seconds waited, reads
    that failed for good."""
    retries: dict[str, int] = {}
    waited, failed = 0.0, 0
    if path:
        with contextlib.suppress(OSError), open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) != 4:
                    continue
                if parts[1] == "retry":
                    retries[parts[2]] = retries.get(parts[2], 0) + 1
                    waited += float(parts[3])
                elif parts[1] == "fail":
                    failed += 1
    return {
        "retries": sum(retries.values()),
        "retry_reasons": retries,  # {reason: count}; the trial writes its change as text
        "retry_wait_seconds": waited,
        "failed_reads": failed,
    }


def _get(
    conn: http.client.HTTPConnection,
    target: str,
    url: str,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> bytes:
    """GET ``target`` on ``conn``, retried as ``policy`` says on an answer 500/502/503/504, a
    reset, refused or timed-out connection, or a short body (the connection is closed after
    any error and reconnects on the next attempt); 404 and 403 are not retried. Without a
    policy: once more on a fresh connection where the server closed an idle one."""
    policy = policy or RetryPolicy(retries=1, base_ms=0.0, cap_ms=0.0)
    waited = 0.0
    for k in range(policy.retries + 1):
        try:
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
                body = resp.read()
            except (http.client.HTTPException, OSError) as exc:
                raise _Retryable(_reason(exc), f"GET {url}: {exc!r}") from exc
            _check(url, resp.status, resp.getheader("Content-Length"), len(body))
            return body
        except _Retryable as exc:
            conn.close()
            wait = policy.backoff(url, exc, k, waited, rng or random)
            waited += wait
            time.sleep(wait)
        except BaseException:
            conn.close()
            raise
    raise AssertionError("unreachable")


class HttpOpener(base.Opener):
    """Reads ``GET /<path relative to root>`` from the session's server: blocking reads on a
    keep-alive connection per thread and process, asyncio reads with aiohttp, each retried as
    the profile's :class:`RetryPolicy` says. Picklable (only the address, port, root,
    certificate path and policy travel; connections are made where used)."""

    def __init__(
        self,
        address: str,
        port: int,
        root: str | Path,
        cafile: str | None = None,
        policy: RetryPolicy | None = None,
    ):
        self.address, self.port, self.root, self.cafile = address, port, str(root), cafile
        self.policy = policy or RetryPolicy()
        scheme = "https" if cafile else "http"
        self.base_url = f"{scheme}://{address}:{port}"
        self._conns = base.PerThread(
            functools.partial(_connect, address, port, cafile, self.policy.timeout_s)
        )
        self._rng = random.Random()  # the backoff's jitter; each process draws its own

    def __getstate__(self):
        return {
            "address": self.address,
            "port": self.port,
            "root": self.root,
            "cafile": self.cafile,
            "policy": self.policy,
        }

    def __setstate__(self, state):
        self.__init__(**state)

    def target(self, path: str) -> str:
        """The request target of a file under root: ``/`` + its relative path, URL-quoted."""
        rel = os.path.relpath(path, self.root)
        if rel == "." or rel == ".." or rel.startswith("../") or os.path.isabs(rel):
            raise OSError(f"http storage: {path} is not under the dataset root {self.root}")
        return "/" + quote(rel, safe="/")

    def read(self, path: str) -> bytes:
        target = self.target(path)
        return _get(self._conns.get(), target, self.base_url + target, self.policy, self._rng)

    def async_reader(self, limit: int):
        return AsyncHttpReader(self, limit)

    def close(self) -> None:
        for conn in self._conns.each():
            with contextlib.suppress(Exception):
                conn.close()


class AsyncHttpReader:
    """aiohttp reads, at most ``limit`` connections (so requests) in flight (0: no limit),
    retried as the opener's policy says. Made inside the running event loop."""

    def __init__(self, opener: HttpOpener, limit: int):
        import aiohttp  # only the asyncio variants need it

        asyncio.get_running_loop()  # the contract: made inside the loop
        self.opener = opener
        ssl_arg: Any = ssl.create_default_context(cafile=opener.cafile) if opener.cafile else True
        # Per socket operation, not total: aiohttp counts a request's wait for a free
        # connection in ``total``, and a gather of many more requests than ``limit`` waits its
        # turn for longer than any one request takes. Twice the blocking readers' timeout:
        # an unbounded gather's connections queue at the server's accept.
        timeout_s = opener.policy.timeout_s * ASYNC_TIMEOUT_FACTOR
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_arg),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s),
            auto_decompress=False,
        )
        self._client_error = aiohttp.ClientError

    async def _attempt(self, url: str) -> bytes:
        try:
            async with self.session.get(url) as resp:
                body = await resp.read()
                status, length = resp.status, resp.headers.get("Content-Length")
        except (TimeoutError, self._client_error, OSError) as exc:
            raise _Retryable(_reason(exc), f"GET {url}: {exc!r}") from exc
        _check(url, status, length, len(body))
        return body

    async def read(self, path: str) -> bytes:
        url = self.opener.base_url + self.opener.target(path)
        policy, waited = self.opener.policy, 0.0
        for k in range(policy.retries + 1):
            try:
                return await self._attempt(url)
            except _Retryable as exc:
                wait = policy.backoff(url, exc, k, waited, self.opener._rng)
                waited += wait
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.session.close()


# --------------------------------------------------------------------------- the server


def nginx_config(
    *,
    address: str,
    port: int,
    workers: int,
    user: str,
    group: str,
    temp: Path,
    sleep_s: str,
    module: str,
    tls: tuple[str, str] | None,
) -> str:
    """The session's nginx.conf: everything under ``temp``, the dataset through ``temp/data``
    (a link to the root, so no path needs quoting), the probe's files under ``temp/probe``."""
    temp_paths = "\n".join(
        f"    {name}_temp_path {temp}/{name}_temp;"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if name not in _nginx_without()
    )
    listen = f"{address}:{port} ssl" if tls else f"{address}:{port}"
    ssl_lines = (
        f"        ssl_certificate {tls[0]};\n"
        f"        ssl_certificate_key {tls[1]};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        if tls
        else ""
    )
    return f"""\
# imgread storage kind http: one session's server, made by pid {os.getpid()}; removed at close.
load_module {module};
daemon off;
master_process on;
worker_processes {workers};
# Workers run as the dataset's owner, so they can read its files without opening them up.
user {user} {group};
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
# asyncio readers without a limit open a connection per image at once
worker_rlimit_nofile 65536;
events {{
    worker_connections 32768;
}}
http {{
    access_log off;
    # Not sendfile: pages it hands to a socket stay referenced after the response (through
    # the kernel's splice pipe), so fadvise could not evict them and a cold trial after a
    # warm-up (the DataLoader's) would not be cold. Read and write, as a store's server copies.
    sendfile off;
    output_buffers 2 256k;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 3600s;
    server_tokens off;
    types {{ }}
    default_type application/octet-stream;
{temp_paths}
    server {{
        listen {listen};
{ssl_lines}        # Each request waits the profile's latency, then its file is sent.
        location / {{
            echo_sleep {sleep_s};
            echo_exec @file;
        }}
        location @file {{
            root {temp}/data;
        }}
        # The probe: a 1-byte file behind the same sleep (latency), and a big one without it,
        # so that back-to-back GETs keep the tbf bucket drained (sustained bandwidth).
        location = {PROBE_PREFIX}{PROBE_SMALL} {{
            echo_sleep {sleep_s};
            echo_exec @probe;
        }}
        location ^~ {PROBE_PREFIX} {{
            root {temp}/probe;
        }}
        location @probe {{
            root {temp}/probe;
        }}
    }}
}}
"""


def _cpu_seconds(stat: str, children: bool) -> float:
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: workers already reaped
    return ticks / os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


class HttpSession(base.Session):
    """nginx in a fresh network namespace over ``root``; see the module's docstring."""

    def __init__(self, profile: base.Profile, root: Path):
        p = profile.params
        self.profile, self.root = profile, Path(root)
        self.latency_ms, self.rate_mbit = float(p["latency_ms"]), float(p["bandwidth_mbit"])
        self.tls, self.workers = bool(p["tls"]), int(p["server_workers"])
        self.faulty = has_faults(profile)
        self.link: netns.Link | None = None
        self.proc: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None
        self.temp: Path | None = None
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ---- set-up, in order; close() undoes whatever part of it was made

    def _open(self) -> None:
        if not self.root.is_dir():
            raise UserError(
                f"storage {self.profile.name}: the dataset root {self.root} is not a folder"
            )
        if self.tls and _which("openssl") is None:
            raise UserError(
                f"storage {self.profile.name}: tls needs the openssl command (apt install openssl)"
            )
        st = self.root.stat()
        try:
            user, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            raise UserError(
                f"storage {self.profile.name}: the dataset root {self.root} belongs to uid "
                f"{st.st_uid}/gid {st.st_gid} with no name, which nginx's 'user' needs"
            ) from None
        with _counter_lock:
            n = next(_counter)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{n}-", dir=shm))
        self.temp.chmod(0o755)  # the workers (the dataset's owner) read the probe's files
        (self.temp / "data").symlink_to(self.root.resolve())
        probe_dir = self.temp / "probe" / PROBE_PREFIX.strip("/")
        probe_dir.mkdir(parents=True)
        self.big_bytes = self._big_size()
        (probe_dir / PROBE_SMALL).write_bytes(b"x")
        with open(probe_dir / PROBE_BIG, "wb") as fh:
            for _ in range(0, self.big_bytes, 1 << 20):
                fh.write(os.urandom(min(1 << 20, self.big_bytes - fh.tell())))
        for path in (probe_dir.parent, probe_dir, probe_dir / PROBE_SMALL, probe_dir / PROBE_BIG):
            path.chmod(0o755 if path.is_dir() else 0o644)

        self.link = netns.make_link(self.rate_mbit)
        self.port = TLS_PORT if self.tls else PORT
        cafile = None
        tls_files = None
        if self.tls:
            tls_files = self._make_certificate()
            cafile = tls_files[0]
        whole_ms = max(math.floor(self.latency_ms + 0.5), 1)  # echo_sleep takes whole ms
        sleep_s = f"{whole_ms / 1000:.3f}"
        conf = self.temp / "nginx.conf"
        conf.write_text(
            nginx_config(
                address=self.link.ns_address,  # with faults: on UPSTREAM_PORT, behind the proxy
                port=UPSTREAM_PORT if self.faulty else self.port,
                workers=self.workers,
                user=user,
                group=group,
                temp=self.temp,
                sleep_s=sleep_s,
                module=echo_module() or ECHO_MODULES[0],
                tls=tls_files,
            )
        )
        p = self.profile.params
        policy = RetryPolicy(
            retries=int(p["retries"]),
            base_ms=float(p["backoff_ms"]),
            cap_ms=float(p["backoff_cap_ms"]),
            timeout_s=float(p["timeout_s"]),
            log=str(self.temp / "retries.log"),
        )
        self.opener = HttpOpener(self.link.ns_address, self.port, self.root, cafile, policy)
        self._start_nginx(conf)
        if self.faulty:
            self._start_proxy()

    def _big_size(self) -> int:
        """The probe's big file: about 0.25 s at the cap, 256 KiB to 32 MiB."""
        quarter_second = int(self.rate_mbit * 1e6 / 8 / 4)
        return min(max(quarter_second, 256 << 10), 32 << 20)

    def _make_certificate(self) -> tuple[str, str]:
        assert self.temp is not None and self.link is not None
        cert, key = str(self.temp / "cert.pem"), str(self.temp / "key.pem")
        args = [_which("openssl") or "openssl", *OPENSSL_REQ.split()]
        args += ["-keyout", key, "-out", cert]
        args += ["-addext", f"subjectAltName=IP:{self.link.ns_address}"]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise OSError(
                f"storage {self.profile.name}: openssl could not make the "
                f"certificate: {done.stderr.strip()[-500:]}"
            )
        os.chmod(key, 0o600)  # the master (root) reads it before dropping to the workers' user
        return cert, key

    def _start_nginx(self, conf: Path) -> None:
        assert self.temp is not None and self.link is not None
        nginx = _which("nginx") or "nginx"
        stderr = open(self.temp / "nginx.stderr", "wb")  # noqa: SIM115 (the child keeps it)
        with stderr:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.link.ns, nginx, "-p", str(self.temp)]
                + ["-e", str(self.temp / "error.log"), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a Ctrl-C to the trial does not reach it first
            )
        port = UPSTREAM_PORT if self.faulty else self.port
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._refuse_a_taken_port("nginx", port, _read(str(self.temp / "error.log")) or "")
            if self.proc.poll() is not None:
                raise OSError(
                    f"storage {self.profile.name}: nginx exited at start "
                    f"(status {self.proc.returncode}): {self._log_tail()}"
                )
            # nginx writes its pid file once it holds its sockets: a connect alone could reach
            # whatever else listens there
            if (self.temp / "nginx.pid").exists() and self._accepts(port):
                return
            if time.monotonic() > deadline:
                raise OSError(
                    f"storage {self.profile.name}: nginx did not accept connections on "
                    f"{self.link.ns_address}:{port} within {START_TIMEOUT_S:g} s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def _refuse_a_taken_port(self, who: str, port: int, log: str) -> None:
        """OSError naming the port where ``who``'s log says another process holds it (the
        namespace is the session's own, so only something started inside it could)."""
        if "address already in use" in log.lower():  # nginx's and Python's wording
            assert self.link is not None
            raise OSError(
                f"storage {self.profile.name}: {who} cannot listen on "
                f"{self.link.ns_address}:{port}: the port is already in use inside the "
                f"session's network namespace {self.link.ns} (another process listens there; "
                "the session is torn down, nothing is left)"
            )

    def _accepts(self, port: int) -> bool:
        """Whether something accepts a connection on the namespace's address and ``port``."""
        assert self.link is not None
        try:
            with socket.create_connection((self.link.ns_address, port), timeout=0.2):
                return True
        except OSError:
            return False

    def _start_proxy(self) -> None:
        """The fault proxy (imgread.storage.http.faultproxy) on the namespace's address, in front
        of nginx; it may kill nginx's process group (``kill_after``)."""
        assert self.temp is not None and self.link is not None and self.proc is not None
        p = self.profile.params
        stderr = open(self.temp / "proxy.stderr", "wb")  # noqa: SIM115 (the child keeps it)
        args = [
            "ip", "netns", "exec", self.link.ns, sys.executable, "-m",
            "imgread.storage.http.faultproxy",
            "--listen", f"{self.link.ns_address}:{self.port}",
            "--upstream", f"{self.link.ns_address}:{UPSTREAM_PORT}",
            "--log", str(self.temp / "requests.log"),
            "--ready", str(self.temp / "proxy.ready"),
            "--seed", str(p["fault_seed"]),
            "--p503", repr(p["fault_503"]),
            "--reset", repr(p["fault_reset"]),
            "--stall", repr(p["fault_stall"]),
            "--stall-s", repr(p["stall_s"]),
            "--kill-after", str(p["kill_after"]),
            "--kill-pgid", str(self.proc.pid),
            "--upstream-timeout", repr(REQUEST_TIMEOUT_S),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": _package_root()}
        with stderr:
            self.proxy = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        ready = self.temp / "proxy.ready"
        while not (ready.exists() and self._accepts(self.port)):
            tail = _read(str(self.temp / "proxy.stderr")) or ""
            self._refuse_a_taken_port("the fault proxy", self.port, tail)
            if self.proxy.poll() is not None or time.monotonic() > deadline:
                raise OSError(
                    f"storage {self.profile.name}: the fault proxy did not start: "
                    f"{tail.strip()[-500:] or '(nothing on its stderr)'}"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        text = ""
        for name in ("error.log", "nginx.stderr"):
            if self.temp is not None:
                text += _read(str(self.temp / name)) or ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-5:]) or "(nothing in its error log)"

    # ---- the contract

    @property
    def address(self) -> str:
        return f"{self.link.ns_address}:{self.port}" if self.link else ""

    def settings(self) -> dict[str, Any]:
        return {
            "storage_server": nginx_version(),
            "storage_qdisc": self.link.qdisc if self.link else "",
            "storage_address": self.address,
            "storage_tls": self.tls,
            "storage_server_workers": self.workers,
            "storage_fault_proxy": self.faulty,
        }

    def counts(self) -> dict[str, Any]:
        """What the transport did so far: the readers' retries (by reason), their seconds of
        backoff and their reads that failed for good (every process's, from the policy's
        log); with the fault proxy, the data requests it saw and the faults it injected."""
        opener = getattr(self, "opener", None)
        out = read_retry_log(opener.policy.log if opener is not None else None)
        if self.faulty and self.temp is not None:
            seen = faultproxy.read_log(str(self.temp / "requests.log"))
            out.update(
                {
                    "server_requests": sum(seen.values()),
                    "faults_503": seen["503"],
                    "faults_reset": seen["reset"],
                    "faults_stall": seen["stall"],
                    "server_killed": seen["killed"],
                }
            )
        return out

    def probe(self) -> base.Probe:
        """Latency: median time to the response's headers of 9 GETs of a 1-byte file on one
        keep-alive connection, after a warm-up GET. Bandwidth: back-to-back GETs of the big
        file until at least 1 s of transfer, each timed from its headers to its last byte;
        summed bytes / summed seconds (MB = 1e6 B). The big file is served without the sleep:
        a sleep would refill the tbf bucket before each response and add its burst to what
        is measured, which is the sustained rate. Bounded: at most 30 s of bandwidth GETs."""
        assert self.link is not None
        t0 = time.perf_counter()
        conn = _connect(self.link.ns_address, self.port, self.opener.cafile)
        small, big = PROBE_PREFIX + PROBE_SMALL, PROBE_PREFIX + PROBE_BIG
        small_url, big_url = self.opener.base_url + small, self.opener.base_url + big
        try:
            _get(conn, small, small_url)  # connects (and shakes hands, with TLS)
            waits = []
            for _ in range(9):
                t = time.perf_counter()
                conn.request("GET", small)
                resp = conn.getresponse()
                waits.append(time.perf_counter() - t)
                body = resp.read()
                _check(small_url, resp.status, resp.getheader("Content-Length"), len(body))
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            moved, seconds, requests = 0, 0.0, 0
            deadline = time.perf_counter() + 30.0
            while seconds < 1.0 and requests < 1000 and time.perf_counter() < deadline:
                conn.request("GET", big)
                resp = conn.getresponse()
                t = time.perf_counter()
                got = 0
                while n := resp.readinto(view):
                    got += n
                seconds += time.perf_counter() - t
                _check(big_url, resp.status, resp.getheader("Content-Length"), got)
                moved += got
                requests += 1
        finally:
            conn.close()
        return base.Probe(
            latency_ms=statistics.median(waits) * 1000,
            bandwidth_mb_per_s=moved / 1e6 / seconds if seconds else None,
            seconds=time.perf_counter() - t0,
        )

    def server_cpu_seconds(self) -> float | None:
        """CPU of the nginx master and its live workers so far (and of workers it reaped)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        master = self.proc.pid
        stat = _read(f"/proc/{master}/stat")
        if stat is None:
            return None
        total = _cpu_seconds(stat, children=True)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or entry.name == str(master):
                continue
            stat = _read(f"/proc/{entry.name}/stat")
            if stat and int(stat.rsplit(")", 1)[1].split()[1]) == master:
                total += _cpu_seconds(stat, children=False)
        return total

    def close(self) -> None:
        """Stop nginx, delete the namespace (and the veth pair), remove the temp folder.
        Idempotent; never raises for something already gone; bounded in time."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        opener = getattr(self, "opener", None)
        if opener is not None:
            opener.close()
        for proc in (self.proxy, self.proc):  # the proxy first: nothing reaches nginx after
            if proc is not None:
                _stop(proc)
        if self.link is not None:
            self.link.close()  # SIGKILLs whatever still runs inside first
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
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


# --------------------------------------------------------------------------- the kind


def _later(name, type_, default, description, minimum=None, maximum=None) -> base.Setting:
    return base.Setting(name, type_, default, description, minimum, maximum, later=True)


def _temp_roots() -> list[str]:
    return [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]


class HttpKind(base.Kind):
    name = "http"
    description = (
        "an object store over a network: nginx in a network namespace, per-request latency "
        "(echo_sleep) and a bandwidth cap (tc tbf) on a veth pair, optional TLS"
    )
    needs = "root, nginx with its echo module, ip and tc (iproute2); openssl for tls"
    settings = (
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

    def __init__(self):
        self._missing: tuple[int, str | None] | None = None

    def check(self, name: str, params: dict[str, Any]) -> base.Profile:
        profile = super().check(name, params)
        p = profile.params
        share = p["fault_503"] + p["fault_reset"] + p["fault_stall"]
        if share > 1:
            raise UserError(
                f"storage profile {name!r}: fault_503 + fault_reset + fault_stall must be at "
                f"most 1 (a share of the requests), got {share:g}"
            )
        if p["tls"] and has_faults(profile):
            raise UserError(
                f"storage profile {name!r}: faults are injected by a plain-HTTP proxy in "
                "front of nginx; use tls: false with fault_* or kill_after"
            )
        return profile

    def missing(self) -> str | None:
        if self._missing is None or self._missing[0] != os.getpid():
            self._missing = (os.getpid(), why_missing())
        return self._missing[1]

    def open(self, profile: base.Profile, root: Path) -> base.Session:
        return HttpSession(profile, Path(root))

    def sweep(self) -> list[str]:
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
        return float(profile.params["latency_ms"])

    def bandwidth_cap_mb_per_s(self, profile: base.Profile) -> float | None:
        return float(profile.params["bandwidth_mbit"]) / 8


KIND = HttpKind()
