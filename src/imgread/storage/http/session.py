"""Kind http's session: the dataset's folder served by nginx inside a network namespace made
for one trial, reached through a capped veth pair (see :mod:`imgread.storage.http`); the
trial reads through the storage client's opener (:mod:`imgread.storage.clients`, the built-in
``imgread`` unless told), probes the endpoint, counts the transport, and tears it all down."""

from __future__ import annotations

import grp
import itertools
import math
import os
import pwd
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from imgread.errors import UserError
from imgread.storage import base
from imgread.storage.clients import registry as clients
from imgread.storage.clients.base import Endpoint
from imgread.storage.http import faultproxy, launch, netns, server
from imgread.storage.http.client import connect, get
from imgread.storage.http.retry import RetryPolicy, check_response, read_retry_log

TEMP_PREFIX = "imgread-http-"  # + <creator pid>-<n>-<random>: sweep tells a dead creator's
_counter = itertools.count()
_counter_lock = threading.Lock()


def dataset_owner(profile: str, root: Path) -> tuple[str, str]:
    """(user, group) names of the dataset root's owner, whom nginx's workers run as."""
    st = root.stat()
    try:
        return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        raise UserError(
            f"storage {profile}: the dataset root {root} belongs to uid "
            f"{st.st_uid}/gid {st.st_gid} with no name, which nginx's 'user' needs"
        ) from None


def policy_of(profile: base.Profile, log: str) -> RetryPolicy:
    """The profile's retry policy, every retry noted in ``log``."""
    p = profile.params
    return RetryPolicy(
        retries=int(p["retries"]),
        base_ms=float(p["backoff_ms"]),
        cap_ms=float(p["backoff_cap_ms"]),
        timeout_s=float(p["timeout_s"]),
        log=log,
    )


class HttpSession(base.Session):
    """nginx in a fresh network namespace over ``root``, read through storage client
    ``client``; see the package's docstring."""

    def __init__(self, profile: base.Profile, root: Path, client: str = clients.DEFAULT):
        p = profile.params
        self.profile, self.root, self.client = profile, Path(root), client
        self.latency_ms, self.rate_mbit = float(p["latency_ms"]), float(p["bandwidth_mbit"])
        self.tls, self.workers = bool(p["tls"]), int(p["server_workers"])
        self.faulty = server.has_faults(profile)
        self.link: netns.Link | None = None
        self.proc: subprocess.Popen | None = None
        self.proxy: subprocess.Popen | None = None
        self.temp: Path | None = None
        self.endpoint: Endpoint | None = None
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
        if self.tls and server.which("openssl") is None:
            raise UserError(
                f"storage {self.profile.name}: tls needs the openssl command (apt install openssl)"
            )
        user, group = dataset_owner(self.profile.name, self.root)
        self._make_temp()
        self.link = netns.make_link(self.rate_mbit)
        self.port = server.TLS_PORT if self.tls else server.PORT
        cafile = None
        tls_files = None
        if self.tls:
            tls_files = server.make_certificate(self.profile.name, self.temp, self.link.ns_address)
            cafile = tls_files[0]
        conf = self._write_config(user, group, tls_files)
        scheme = "https" if cafile else "http"
        self.endpoint = Endpoint(
            profile=self.profile.name,
            kind="http",
            base_url=f"{scheme}://{self.link.ns_address}:{self.port}",
            host=self.link.ns_address,
            port=self.port,
            root=str(self.root),
            cafile=cafile,
            policy=policy_of(self.profile, str(self.temp / "retries.log")),
            bucket=server.BUCKET,
            region=server.REGION,
            sdk_home=str(self.temp / "sdk"),
        )
        self.opener = clients.opener_for(self.client, self.endpoint)  # S3 clients: env isolated
        self.proc = launch.spawn_nginx(self.temp, self.link, conf)
        upstream = server.UPSTREAM_PORT if self.faulty else self.port
        launch.await_nginx(self.proc, self.profile.name, self.temp, self.link, upstream)
        if self.faulty:
            self.proxy = launch.spawn_proxy(
                self.temp, self.link, self.port, self.profile.params, self.proc.pid
            )
            launch.await_proxy(self.proxy, self.profile.name, self.temp, self.link, self.port)

    def _make_temp(self) -> None:
        """The session's folder (on /dev/shm where there is one): the dataset linked as
        ``data``, the probe's small and big files under ``probe``."""
        with _counter_lock:
            n = next(_counter)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{n}-", dir=shm))
        self.temp.chmod(0o755)  # the workers (the dataset's owner) read the probe's files
        (self.temp / "data").symlink_to(self.root.resolve())
        (self.temp / "buckets").mkdir()
        (self.temp / "buckets" / server.BUCKET).symlink_to(self.root.resolve())
        self._make_sdk_home()
        probe_dir = self.temp / "probe" / server.PROBE_PREFIX.strip("/")
        probe_dir.mkdir(parents=True)
        self.big_bytes = self._big_size()
        small, big = probe_dir / server.PROBE_SMALL, probe_dir / server.PROBE_BIG
        small.write_bytes(b"x")
        with open(big, "wb") as fh:
            for _ in range(0, self.big_bytes, 1 << 20):
                fh.write(os.urandom(min(1 << 20, self.big_bytes - fh.tell())))
        for path in (probe_dir.parent, probe_dir, small, big):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def _make_sdk_home(self) -> None:
        """The S3 clients' HOME (empty) and their AWS config and credentials files (empty),
        so that no SDK of the trial reads the machine's (imgread.storage.clients.s3env)."""
        assert self.temp is not None
        sdk = self.temp / "sdk"
        (sdk / "home").mkdir(parents=True)
        for name in ("empty.config", "empty.creds"):
            (sdk / name).write_bytes(b"")

    def _write_config(self, user: str, group: str, tls_files) -> Path:
        assert self.temp is not None and self.link is not None
        whole_ms = max(math.floor(self.latency_ms + 0.5), 1)  # echo_sleep takes whole ms
        conf = self.temp / "nginx.conf"
        conf.write_text(
            server.nginx_config(
                address=self.link.ns_address,  # with faults: on UPSTREAM_PORT, behind the proxy
                port=server.UPSTREAM_PORT if self.faulty else self.port,
                workers=self.workers,
                user=user,
                group=group,
                temp=self.temp,
                sleep_s=f"{whole_ms / 1000:.3f}",
                module=server.echo_module() or server.ECHO_MODULES[0],
                tls=tls_files,
            )
        )
        return conf

    def _big_size(self) -> int:
        """The probe's big file: about 0.25 s at the cap, 256 KiB to 32 MiB."""
        quarter_second = int(self.rate_mbit * 1e6 / 8 / 4)
        return min(max(quarter_second, 256 << 10), 32 << 20)

    # ---- the contract

    @property
    def address(self) -> str:
        """``address:port`` of the server the readers reach ("" before the link is made)."""
        return f"{self.link.ns_address}:{self.port}" if self.link else ""

    def settings(self) -> dict[str, Any]:
        """The server, qdisc, address, TLS, workers and fault proxy, for the record."""
        out = {
            "storage_server": server.nginx_version(),
            "storage_qdisc": self.link.qdisc if self.link else "",
            "storage_address": self.address,
            "storage_tls": self.tls,
            "storage_server_workers": self.workers,
            "storage_fault_proxy": self.faulty,
        }
        if self.client != clients.DEFAULT and self.endpoint is not None:
            # the built-in's records stay as they were; another client's name its settings
            client = clients.get_client(self.client, "http")
            out.update(storage_client=self.client, client_retries_counted=client.retries_counted)
            out.update(client.settings(self.endpoint))
        return out

    def counts(self) -> dict[str, Any]:
        """What the transport did so far: the readers' retries (by reason), their seconds of
        backoff and their reads that failed for good (every process's, from the policy's
        log); with the fault proxy, the data requests it saw and the faults it injected."""
        endpoint = getattr(self, "endpoint", None)
        out = read_retry_log(endpoint.policy.log if endpoint is not None else None)
        if self.faulty and self.temp is not None:
            seen = faultproxy.read_log(str(self.temp / "requests.log"))
            out.update(
                {
                    "server_requests": sum(seen.values()),
                    "faults_503": seen["503"],
                    "faults_reset": seen["reset"],
                    "faults_stall": seen["stall"],
                    "server_killed": seen["killed"],
                    # the proxy is the trial's child: taken out of the client's CPU per request
                    "proxy_cpu_seconds": launch.cpu_seconds(self.proxy) or 0.0,
                }
            )
            if clients.get_client(self.client, "http").retries_counted == "proxy":
                # an SDK that does not report its retries: each exchange the proxy failed
                # (503, a reset, one broken or dropped) was retried or given up on
                failed = ("503", "reset", "broken", "dropped", "killed")
                out["retries"] = sum(seen[k] for k in failed)
                out["retry_reasons"] = {k: seen[k] for k in failed if seen[k]}
        return out

    def probe(self) -> base.Probe:
        """Latency: median time to the response's headers of 9 GETs of a 1-byte file on one
        keep-alive connection, after a warm-up GET. Bandwidth: back-to-back GETs of the big
        file until at least 1 s of transfer, each timed from its headers to its last byte;
        summed bytes / summed seconds (MB = 1e6 B). The big file is served without the sleep:
        a sleep would refill the tbf bucket before each response and add its burst to what
        is measured, which is the sustained rate. Bounded: at most 30 s of bandwidth GETs."""
        assert self.link is not None and self.endpoint is not None
        t0 = time.perf_counter()
        conn = connect(self.link.ns_address, self.port, self.endpoint.cafile)
        base_url = self.endpoint.base_url
        try:
            waits = _latencies(conn, base_url)
            moved, seconds = _bandwidth(conn, base_url)
        finally:
            conn.close()
        return base.Probe(
            latency_ms=statistics.median(waits) * 1000,
            bandwidth_mb_per_s=moved / 1e6 / seconds if seconds else None,
            seconds=time.perf_counter() - t0,
        )

    def server_cpu_seconds(self) -> float | None:
        """CPU of the nginx master and its live workers so far (and of workers it reaped)."""
        return launch.cpu_seconds(self.proc)

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
                launch.stop(proc)
        if self.link is not None:
            self.link.close()  # SIGKILLs whatever still runs inside first
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def _latencies(conn, base_url: str) -> list[float]:
    """Seconds to the headers of 9 GETs of the probe's small file, after a warm-up GET (which
    connects, and shakes hands with TLS)."""
    small = server.PROBE_PREFIX + server.PROBE_SMALL
    url = base_url + small
    get(conn, small, url)
    waits = []
    for _ in range(9):
        t = time.perf_counter()
        conn.request("GET", small)
        resp = conn.getresponse()
        waits.append(time.perf_counter() - t)
        body = resp.read()
        check_response(url, resp.status, resp.getheader("Content-Length"), len(body))
    return waits


def _bandwidth(conn, base_url: str) -> tuple[int, float]:
    """(bytes, seconds) of back-to-back GETs of the probe's big file, each timed from its
    headers to its last byte, until 1 s of transfer (at most 1000 GETs, 30 s)."""
    big = server.PROBE_PREFIX + server.PROBE_BIG
    url = base_url + big
    view = memoryview(bytearray(1 << 20))
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
        check_response(url, resp.status, resp.getheader("Content-Length"), got)
        moved += got
        requests += 1
    return moved, seconds
