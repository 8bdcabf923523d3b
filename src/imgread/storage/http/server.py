"""Kind http's server: what the machine needs (nginx, its echo module, iproute2, root), the
session's nginx.conf and its TLS certificate. Starting and stopping the processes is
:mod:`imgread.storage.http.launch`."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from imgread.storage import base

PORT = 8080  # plain HTTP; the namespace is private, so a fixed port cannot clash
UPSTREAM_PORT = 8081  # nginx's port behind the fault proxy (same namespace address)
TLS_PORT = 8443
PROBE_PREFIX = "/__imgread_probe__/"
PROBE_SMALL, PROBE_BIG = "one-byte", "big"
# The S3 clients' view of the dataset: /<BUCKET>/<key>, path style (a folder of the session's
# temp links the bucket's name to the dataset), in a region the clients are told explicitly.
BUCKET = "imgread-bucket"  # a top-level folder of this name would be hidden by the bucket
REGION = "us-east-1"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0
# A self-signed EC certificate for the namespace's address (subjectAltName added per session);
# not a CA (rustls, obstore's TLS, refuses a CA certificate as the server's own)
OPENSSL_REQ = (
    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    "-subj /CN=imgread-http -addext basicConstraints=critical,CA:FALSE"
)
ECHO_MODULES = (
    "/usr/lib/nginx/modules/ngx_http_echo_module.so",
    "/usr/lib64/nginx/modules/ngx_http_echo_module.so",
    "/usr/share/nginx/modules/ngx_http_echo_module.so",
)
FAULT_SETTINGS = ("fault_503", "fault_reset", "fault_stall", "kill_after")


def has_faults(profile: base.Profile) -> bool:
    """Whether the profile injects any fault (so runs the fault proxy)."""
    return any(profile.params.get(k) for k in FAULT_SETTINGS)


# --------------------------------------------------------------------------- what it needs


def which(name: str) -> str | None:
    """The command's path (IMGREAD_NGINX names the nginx to use), or None."""
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
        [which("nginx") or "nginx", "-v"], capture_output=True, text=True, timeout=10
    )
    match = re.search(r"nginx/\S+", done.stderr + done.stdout)
    return match.group(0) if match else "nginx/unknown"


@functools.cache
def _nginx_without() -> frozenset[str]:
    """The http modules this nginx was built without (their temp-path directives are unknown)."""
    done = subprocess.run(
        [which("nginx") or "nginx", "-V"], capture_output=True, text=True, timeout=10
    )
    return frozenset(re.findall(r"--without-http_(\w+)_module", done.stderr + done.stdout))


def why_missing() -> str | None:
    """Why this machine cannot run kind http (one line), or None."""
    if os.geteuid() != 0:
        return f"needs root to make a network namespace (running as uid {os.geteuid()})"
    if which("nginx") is None or echo_module() is None:
        return (
            "nginx and its echo module are not installed: make setup installs them as root "
            "(apt install nginx-light libnginx-mod-http-echo)"
        )
    for tool in ("ip", "tc"):
        if which(tool) is None:
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


# --------------------------------------------------------------------------- the config

# The session's nginx.conf (str.format: doubled braces are nginx's own).
NGINX_CONF = """\
# imgread storage kind http: one session's server, made by pid {pid}; removed at close.
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
        # The same files as objects of a bucket, path style (/<bucket>/<key>), for the S3
        # clients: the static handler answers HEAD, ranged GETs (206, Content-Range), ETag and
        # Last-Modified; the latency first, as for every request.
        location ^~ /{bucket}/ {{
            echo_sleep {sleep_s};
            echo_exec @bucket;
        }}
        location @bucket {{
            root {temp}/buckets;
        }}
        # The probe: a 1-byte file behind the same sleep (latency), and a big one without it,
        # so that back-to-back GETs keep the tbf bucket drained (sustained bandwidth).
        location = {probe_prefix}{probe_small} {{
            echo_sleep {sleep_s};
            echo_exec @probe;
        }}
        location ^~ {probe_prefix} {{
            root {temp}/probe;
        }}
        location @probe {{
            root {temp}/probe;
        }}
    }}
}}
"""


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
    (a link to the root, so no path needs quoting) and as the bucket ``temp/buckets/<BUCKET>``
    (the S3 clients'), the probe's files under ``temp/probe``."""
    temp_paths = "\n".join(
        f"    {name}_temp_path {temp}/{name}_temp;"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if name not in _nginx_without()
    )
    ssl_lines = (
        f"        ssl_certificate {tls[0]};\n"
        f"        ssl_certificate_key {tls[1]};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        if tls
        else ""
    )
    return NGINX_CONF.format(
        pid=os.getpid(),
        module=module,
        workers=workers,
        user=user,
        group=group,
        temp=temp,
        temp_paths=temp_paths,
        listen=f"{address}:{port} ssl" if tls else f"{address}:{port}",
        ssl_lines=ssl_lines,
        sleep_s=sleep_s,
        probe_prefix=PROBE_PREFIX,
        probe_small=PROBE_SMALL,
        bucket=BUCKET,
    )


def make_certificate(profile: str, temp: Path, address: str) -> tuple[str, str]:
    """(certificate, key) files of a self-signed certificate for ``address``, under ``temp``."""
    cert, key = str(temp / "cert.pem"), str(temp / "key.pem")
    args = [which("openssl") or "openssl", *OPENSSL_REQ.split()]
    args += ["-keyout", key, "-out", cert]
    args += ["-addext", f"subjectAltName=IP:{address}"]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise OSError(
            f"storage {profile}: openssl could not make the "
            f"certificate: {done.stderr.strip()[-500:]}"
        )
    os.chmod(key, 0o600)  # the master (root) reads it before dropping to the workers' user
    return cert, key
