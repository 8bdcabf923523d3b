"""The S3 clients users run (imgread.storage.clients: boto3, obstore, s3torchconnector) against
kind http's emulated store: the bucket answers what they need (ranged GETs, HEAD, ETag,
Last-Modified), each reads exactly a dataset's objects (blocking, from threads, from a forked
process, from asyncio), a trial reads through the client its grid key names and records its
settings and CPU per request, a failing store's faults are retried and counted, and, traced
with strace across the trial's whole process tree, no SDK reaches any address but the
endpoint or opens a credential or config file of the machine's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError
from imgread.phases.registry import get_phase
from imgread.plan.grid import trial_grid
from imgread.storage import registry as storage
from imgread.storage.clients import registry as clients
from imgread.storage.clients.base import Endpoint
from imgread.storage.clients.s3env import isolate
from imgread.storage.http.kind import KIND
from imgread.storage.http.retry import RetryPolicy
from imgread.storage.http.server import BUCKET
from imgread.trial.run import TrialSpec, run_trial

WHY = KIND.missing()
needs_kind = pytest.mark.skipif(WHY is not None, reason=f"kind http cannot run here: {WHY}")
S3 = ("boto3", "obstore", "s3torchconnector")
MISSING = {c: clients.clients()[c].missing() for c in S3}
QUICK = {"latency_ms": 1, "bandwidth_mbit": 10000, "backoff_ms": 5, "backoff_cap_ms": 40}
STRACE = shutil.which("strace")


def each_client():
    """The S3 clients as params, each skipped (saying what to install) where it is missing."""
    return [
        pytest.param(c, marks=pytest.mark.skipif(bool(MISSING[c]), reason=str(MISSING[c])))
        for c in S3
    ]


def _files(manifest) -> list[str]:
    m = read_manifest(manifest)
    return [str(m.root / e.path) for e in m.entries]


def _bytes(paths) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


def _read_in_child(opener, paths, out) -> None:
    out.put([opener.read(p) for p in paths])


_FORKED = """
import multiprocessing as mp, pickle, sys
sys.path.insert(0, {tests!r})
from storage.test_s3_clients import _read_in_child
opener, paths = pickle.load(open({dump!r}, "rb"))
out = mp.get_context("fork").Queue()
child = mp.get_context("fork").Process(target=_read_in_child, args=(opener, paths, out))
child.start()
got = out.get(timeout=60)
child.join(30)
assert child.exitcode == 0, child.exitcode
pickle.dump(got, open({dump!r}, "wb"))
"""


def _read_in_forked_child(opener, paths, tmp_path) -> list[bytes]:
    """What a child forked by a fresh interpreter reads through the pickled ``opener``."""
    dump = tmp_path / "opener.pickle"
    with open(dump, "wb") as fh:
        pickle.dump((opener, paths), fh)
    code = _FORKED.format(tests=str(Path(__file__).parents[1]), dump=str(dump))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    with open(dump, "rb") as fh:
        return pickle.load(fh)


@needs_kind
def test_the_bucket_answers_what_the_s3_clients_need(small_dataset):
    files = _files(small_dataset)
    root = Path(files[0]).parent
    key = os.path.relpath(files[0], read_manifest(small_dataset).root)
    data = Path(files[0]).read_bytes()
    with storage.session(KIND.check("s3", QUICK), root.parent) as (session, _):
        ep = session.endpoint
        conn = http.client.HTTPConnection(ep.host, ep.port, timeout=10)
        target = f"/{ep.bucket}/{key}"
        conn.request("GET", target, headers={"Range": "bytes=10-99"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == data[10:100]
        assert resp.getheader("Content-Range") == f"bytes 10-99/{len(data)}"
        conn.request("HEAD", target)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(data)
        assert resp.getheader("ETag") and resp.getheader("Last-Modified")
        conn.request("GET", f"/{ep.bucket}/no-such-key")
        assert conn.getresponse().status == 404
        conn.close()
    assert ep.bucket == BUCKET and ep.region


@needs_kind
@pytest.mark.parametrize("client", each_client())
def test_each_client_reads_exactly_the_datasets_objects(small_dataset, client, tmp_path):
    files = _files(small_dataset)
    want = _bytes(files)
    root = read_manifest(small_dataset).root
    with storage.session(KIND.check("s3", QUICK), root, client) as (session, _):
        opener = session.opener
        assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
        # a forked worker first (as the trial's pools start before any read): its own client.
        # Forked from a fresh interpreter, as a trial's process is one: this test process may
        # have used obstore's runtime already (another test's LitData epoch), which no child
        # forked after that can use (docs/storage-clients.md)
        assert _read_in_forked_child(opener, files, tmp_path) == want
        assert [opener.read(p) for p in files] == want
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(opener.read, files)) == want

        async def gathered():
            reader = opener.async_reader(3)
            try:
                return await asyncio.gather(*(reader.read(p) for p in files))
            finally:
                await reader.close()

        assert list(asyncio.run(gathered())) == want
        with pytest.raises(FileNotFoundError):
            opener.read(str(root / "no-such-file.jpg"))
        assert session.settings()["storage_client"] == client


@needs_kind
@pytest.mark.parametrize("client", each_client())
def test_tls_trusts_exactly_the_sessions_certificate(small_dataset, client):
    files = _files(small_dataset)
    root = read_manifest(small_dataset).root
    profile = KIND.check("s3tls", {**QUICK, "tls": True})
    if client == "s3torchconnector":  # the CRT cannot be told which certificate to trust
        with pytest.raises(UserError, match="trust only the session's certificate"):
            with storage.session(profile, root, client):
                pass
        return
    with storage.session(profile, root, client) as (session, _):
        assert session.endpoint.base_url.startswith("https://")
        assert [session.opener.read(p) for p in files[:4]] == _bytes(files[:4])


def _spec(manifest, client, variant="threads", workers=2, **settings) -> TrialSpec:
    entry = {"name": "s3", "kind": "http", **QUICK, **settings}
    return TrialSpec(
        str(manifest),
        "load",
        variant,
        n_images=12,
        workers=workers,
        params={"storage": "s3", "client": client},
        storage=entry,
    )


@needs_kind
@pytest.mark.parametrize("client", each_client())
@pytest.mark.parametrize("variant, workers", [("threads", 2), ("asyncio", 1)])
def test_a_trial_reads_through_its_client_and_records_it(small_dataset, client, variant, workers):
    before = dict(os.environ)
    d = run_trial(_spec(small_dataset, client, variant, workers)).to_dict()
    assert d["images"] == 12 and d["client"] == client and d["storage_client"] == client
    assert d["client_version"].startswith(client) and d["client_retries"]
    assert 0 < d["client_cpu_ms_per_request"] < 1000
    assert dict(os.environ) == before  # the trial's environment put back


@needs_kind
@pytest.mark.parametrize("client", each_client())
def test_a_failing_store_is_retried_and_counted(small_dataset, client):
    # seed 4: 5 of the first 12 requests are answered 503 (the draw is the same every run)
    spec = _spec(small_dataset, client, fault_503=0.25, fault_seed=4, retries=8)
    d = run_trial(spec).to_dict()
    assert d["images"] == 12  # every image checked against the manifest after the clock
    assert d["faults_503"] >= 1 and d["retries"] == d["faults_503"]
    assert d["server_requests"] == 12 + d["retries"]
    counted = "client" if client == "boto3" else "proxy"
    assert d["client_retries_counted"] == counted


def test_local_storage_takes_the_imgread_client_only(small_dataset):
    for phase in ("load", "dataloader"):
        p = get_phase(phase)
        variant = next(iter(p.variants))
        params = p.resolve({"client": "boto3"})
        assert "client boto3 reads an object store" in p.unsupported(variant, params)
        assert p.redundant(variant, params)
    with pytest.raises(UserError, match="unknown client 'botox'"):
        get_phase("load").resolve({"client": "botox"})
    config = {
        "phases": {"load": {"threads": {"workers": [2], "client": ["imgread", "boto3"]}}},
        "sizes": [12],
        "repetitions": 1,
        "datasets": [{"name": "ds"}],
    }
    cells = trial_grid(config)
    assert [dict(c.params)["client"] for c in cells] == ["imgread"]  # boto3 on local: left out
    with (
        pytest.raises(UserError, match="use client imgread"),
        storage.session(storage.profile_from(None), Path(_files(small_dataset)[0]).parent, "boto3"),
    ):
        pass


def test_the_environment_is_isolated_and_put_back(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://192.0.2.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://192.0.2.1:3128")
    before = dict(os.environ)
    ep = Endpoint(
        "s3",
        "http",
        "http://10.0.0.2:8080",
        "10.0.0.2",
        8080,
        str(tmp_path),
        None,
        RetryPolicy(),
        bucket="b",
        region="us-east-1",
        sdk_home=str(tmp_path),
    )
    undo = isolate(ep)
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_ENDPOINT_URL" not in os.environ
    assert "HTTPS_PROXY" not in os.environ and os.environ["NO_PROXY"] == "*"
    assert os.environ["HOME"] == str(tmp_path / "home")
    assert os.environ["AWS_CONFIG_FILE"] == str(tmp_path / "empty.config")
    undo.restore()
    assert dict(os.environ) == before


# --------------------------------------------------------------------------- the trace

TRIAL = (
    "import json, sys; from imgread.trial.run import TrialSpec, run_trial; "
    "spec = TrialSpec(**json.loads(sys.argv[1])); print(json.dumps(run_trial(spec).to_dict()))"
)
# connect/sendto/sendmsg with an internet address: family, address, port
_INET = re.compile(
    r"(connect|sendto|sendmsg)\(.*?sa_family=(AF_INET6?),\s*sin6?_port=htons\((\d+)\),.*?"
    r"(?:inet_addr\(\"([^\"]+)\"\)|inet_pton\(AF_INET6,\s*\"([^\"]+)\")"
)
_OPEN = re.compile(r"open(?:at)?\((?:[^,]+,\s*)?\"([^\"]+)\"")
_FORBIDDEN = re.compile(r"(/\.aws(/|$))|(/credentials$)|(/aws[^/]*/config$)|(/\.boto$)")


def _traced_trial(spec: TrialSpec, tmp_path: Path) -> tuple[dict, str]:
    """The trial run in a child under ``strace -f``, with a HOME holding AWS credentials and
    config that point elsewhere and environment variables that would too; (record, trace)."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n"
    )
    (home / ".aws" / "config").write_text(
        "[default]\nregion = eu-west-1\nendpoint_url = http://192.0.2.1:9\n"
    )
    env = dict(
        os.environ,
        HOME=str(home),
        AWS_PROFILE="default",
        AWS_ENDPOINT_URL="http://192.0.2.1:9",
        HTTP_PROXY="http://192.0.2.1:3128",
        HTTPS_PROXY="http://192.0.2.1:3128",
    )
    env.pop("AWS_EC2_METADATA_DISABLED", None)
    trace = tmp_path / "trace.txt"
    done = subprocess.run(
        [STRACE, "-f", "-qq", "-s", "256", "-o", str(trace),
         "-e", "trace=connect,sendto,sendmsg,open,openat",
         sys.executable, "-c", TRIAL, json.dumps(spec.__dict__)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), trace.read_text()


@needs_kind
@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt install strace)")
@pytest.mark.parametrize("client", each_client())
@pytest.mark.parametrize("variant, workers", [("threads", 2), ("processes", 2)])
def test_no_sdk_reaches_another_address_or_reads_the_machines_credentials(
    small_dataset, tmp_path, client, variant, workers
):
    record, trace = _traced_trial(_spec(small_dataset, client, variant, workers), tmp_path)
    assert record["images"] == 12 and record["storage_client"] == client
    host, port = record["storage_address"].rsplit(":", 1)
    reached = set()
    for line in trace.splitlines():
        match = _INET.search(line)
        if match:
            reached.add((match.group(4) or match.group(5), match.group(3)))
        elif re.search(r"(connect|sendto|sendmsg)\(.*sa_family=AF_INET", line):
            raise AssertionError(f"an internet address the test cannot read: {line}")
    assert reached == {(host, port)}, f"reached {sorted(reached)}, not only {host}:{port}"
    opened = {m.group(1) for m in map(_OPEN.search, trace.splitlines()) if m}
    assert any(p.endswith(".jpg") or "imgread-bucket" in p for p in opened)
    forbidden = sorted(p for p in opened if _FORBIDDEN.search(p))
    assert not forbidden, f"opened the machine's credentials or config: {forbidden}"
