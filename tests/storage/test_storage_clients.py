"""The claim "adding a storage client is one module": a client written outside the package (the
toy module below, written into a temporary folder beside a dist-info with its
``imgread.storage_clients`` entry point, what ``pip install`` writes) is registered and reads
exactly the dataset's bytes from a real HTTP server (a loopback one serving a folder, and kind
http's own nginx in a network namespace where this machine runs it), in threads, pickled, and
from asyncio; each kind of broken plug-in is refused, named."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imgread.errors import UserError
from imgread.storage import registry as storage_registry
from imgread.storage.clients import registry
from imgread.storage.clients.base import ClientOpener, Endpoint
from imgread.storage.http import netns
from imgread.storage.http.client import HttpOpener
from imgread.storage.http.kind import KIND
from imgread.storage.http.retry import RetryPolicy, read_retry_log
from imgread.storage.http.session import HttpSession

from ..support.helpers import install_plugin, read_async

WHY = KIND.missing()
BUILT_IN = ["imgread", "boto3", "obstore", "s3torchconnector"]  # the package's own clients

TOY = '''
"""A storage client from outside imgread: one http.client connection per thread, asked for
each object by key."""

import http.client
from urllib.parse import quote

from imgread.storage.base import Opener
from imgread.storage.clients.base import Client, Reader


class ToyReader(Reader):
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.conn = http.client.HTTPConnection(
            endpoint.host, endpoint.port, timeout=endpoint.policy.timeout_s
        )

    def read(self, key):
        self.conn.request("GET", "/" + quote(key))
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status == 404:
            raise FileNotFoundError(f"toy: no object {key!r}")
        if resp.status != 200:
            raise OSError(f"toy: GET {key!r}: HTTP {resp.status}")
        return body

    def close(self):
        self.conn.close()


class Toy(Client):
    name = "toy"
    description = "http.client, one connection per thread (a test's toy)"
    kinds = ("http",)

    def open(self, endpoint):
        return ToyReader(endpoint)


class NoOpen(Client):
    name = "noopen"
    description = "forgets to read"
    kinds = ("http",)


class WrongOpener(Toy):
    name = "wrongopener"

    def opener(self, endpoint):
        return object()


TOY = Toy()
NO_OPEN = NoOpen()
WRONG_OPENER = WrongOpener()
BAD = Toy()
BAD.name, BAD.description, BAD.kinds = "Bad Name", " ", ["http"]
OTHER = Toy()
OTHER.name = "other"
CLASH = Toy()
CLASH.name = "imgread"
NOT_A_CLIENT = ToyReader
'''


def _plugin(root: Path, *entry_points: str) -> Path:
    """The toy module and a ``toyclient-0.1.dist-info`` naming ``entry_points`` in ``root``."""
    return install_plugin(root, "toyclient", TOY, registry.ENTRY_POINT_GROUP, *entry_points)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install the toy with the given entry point lines (on sys.path, as pip would)."""

    def install(*entry_points: str) -> None:
        monkeypatch.syspath_prepend(str(_plugin(tmp_path / "plugin", *entry_points)))
        monkeypatch.delitem(sys.modules, "toyclient", raising=False)
        registry.clients.cache_clear()

    yield install
    registry.clients.cache_clear()  # the next test sees the package's own clients only


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """16 files of random bytes (20-90 KB) in two folders, one name that needs quoting."""
    root = tmp_path_factory.mktemp("clients") / "ds"
    rng = random.Random(5)
    for i in range(16):
        path = root / ("sub" if i % 2 else "") / (f"f {i:02d}.bin" if i == 3 else f"f{i:02d}.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(20_000, 90_000)))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.bin"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request on the test's stderr
        pass


@pytest.fixture
def loopback(root, tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``root``, as an Endpoint."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield Endpoint(
            profile="loopback",
            kind="http",
            base_url=f"http://{host}:{port}",
            host=host,
            port=port,
            root=str(root),
            cafile=None,
            policy=RetryPolicy(log=str(tmp_path / "retries.log")),
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _reads_exactly(opener, files: list[Path]) -> None:
    """Every file's bytes, one by one, from 4 threads, pickled, and from asyncio."""
    want = [sha(p.read_bytes()) for p in files]
    paths = [str(p) for p in files]
    assert [sha(opener.read(p)) for p in paths] == want
    with ThreadPoolExecutor(4) as pool:
        assert [sha(b) for b in pool.map(opener.read, paths)] == want
    copy = pickle.loads(pickle.dumps(opener))
    assert [sha(copy.read(p)) for p in paths] == want
    copy.close()
    assert [sha(b) for b in read_async(opener, paths, 3)] == want
    opener.close()


def test_a_client_from_outside_reads_the_files_bytes_exactly(installed, loopback, root):
    installed("toy = toyclient:TOY")
    assert list(registry.clients()) == [*BUILT_IN, "toy"]
    opener = registry.opener_for("toy", loopback)
    assert isinstance(opener, ClientOpener) and type(opener.client).__name__ == "Toy"
    _reads_exactly(opener, _files(root))
    with pytest.raises(FileNotFoundError, match="toy: no object 'none.bin'"):
        opener.read(str(root / "none.bin"))
    with pytest.raises(OSError, match="is not under the dataset root"):
        opener.read("/etc/passwd")
    # what a client that retries on its own notes is what the session counts
    loopback.note("retry", "503", 0.25)
    loopback.note("fail", "reset", 0.0)
    assert read_retry_log(loopback.policy.log) == {
        "retries": 1,
        "retry_reasons": {"503": 1},
        "retry_wait_seconds": 0.25,
        "failed_reads": 1,
    }


def test_the_builtin_client_is_todays_reader(loopback, root):
    opener = registry.opener_for(registry.DEFAULT, loopback)
    assert type(opener) is HttpOpener
    assert (opener.address, opener.port, opener.root) == (loopback.host, loopback.port, str(root))
    assert opener.policy is loopback.policy and opener.base_url == loopback.base_url
    _reads_exactly(opener, _files(root))
    reader = registry.get_client("imgread", "http").open(loopback)  # the contract's form
    try:
        first = _files(root)[3]
        assert reader.read(os.path.relpath(first, root)) == first.read_bytes()
    finally:
        reader.close()


@pytest.mark.skipif(WHY is not None, reason=f"kind http cannot run here: {WHY}")
def test_a_client_from_outside_reads_from_the_kinds_own_server(installed, root):
    installed("toy = toyclient:TOY")
    entry = {"name": "toyhttp", "kind": "http", "latency_ms": 1, "bandwidth_mbit": 10000}
    profile = storage_registry.parse_profiles([entry])["toyhttp"]
    session = HttpSession(profile, root, client="toy")
    try:
        assert type(session.opener).__name__ == "ClientOpener"
        _reads_exactly(session.opener, _files(root))
        assert session.counts()["retries"] == 0
        assert session.probe().latency_ms is not None
    finally:
        session.close()
    assert not session.temp.exists()
    assert session.link.ns not in netns.namespaces()


BROKEN = [
    (
        "noopen = toyclient:NO_OPEN",
        "storage client toyclient:NO_OPEN (entry point noopen of group imgread.storage_clients) "
        "breaks the storage client contract: neither open(endpoint) nor opener(endpoint) is "
        "implemented",
    ),
    (
        "bad = toyclient:BAD",
        "storage client toyclient:BAD (entry point bad of group imgread.storage_clients) breaks "
        "the storage client contract: name 'Bad Name' must be lower-case letters, digits, - or "
        "_; no description (one line: the library and how it reads); kinds ['http'] must be a "
        "non-empty tuple of storage kind names",
    ),
    (
        "toy = toyclient:OTHER",
        "storage client toyclient:OTHER (entry point toy of group imgread.storage_clients) "
        "breaks the storage client contract: name 'other' is not its entry point's name 'toy'",
    ),
    (
        "notaclient = toyclient:NOT_A_CLIENT",
        "storage client toyclient:NOT_A_CLIENT (entry point notaclient of group "
        "imgread.storage_clients) is type, not an instance of "
        "imgread.storage.clients.base.Client",
    ),
    (
        "imgread = toyclient:CLASH",
        "storage client 'imgread' of toyclient:CLASH (entry point imgread of group "
        "imgread.storage_clients) is registered twice (already by "
        "imgread.storage.http.client:IMGREAD); give it another name",
    ),
]


@pytest.mark.parametrize("line, says", BROKEN, ids=[b[0].split()[0] for b in BROKEN])
def test_a_broken_plugin_is_refused_naming_it(installed, line, says):
    installed(line)
    with pytest.raises(RuntimeError) as caught:
        registry.clients()
    assert str(caught.value) == says


def test_a_plugin_that_cannot_load_is_named_with_what_to_do(installed):
    installed("gone = toyclient_not_installed:TOY")
    with pytest.raises(UserError) as caught:
        registry.clients()
    assert str(caught.value) == (
        "cannot load storage client toyclient_not_installed:TOY (entry point gone of group "
        "imgread.storage_clients): ModuleNotFoundError: No module named "
        "'toyclient_not_installed'; install the package that provides it, or fix its entry point"
    )


def test_a_wrong_choice_or_a_wrong_opener_is_refused_naming_the_client(installed, loopback):
    installed("toy = toyclient:TOY", "wrongopener = toyclient:WRONG_OPENER")
    with pytest.raises(UserError, match="unknown storage client 'boto'; choose one of imgread"):
        registry.get_client("boto", "http")
    with pytest.raises(UserError, match="'toy' reads storage of kind http, not 'volume'"):
        registry.get_client("toy", "volume")
    with pytest.raises(TypeError, match="'wrongopener': opener\\(\\) returned object, not an"):
        registry.opener_for("wrongopener", loopback)
