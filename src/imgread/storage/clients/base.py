"""The contract of a storage client: a library that reads a session's objects (boto3, obstore,
s3torchconnector, or the project's own reader), plugged in beside the kind that serves them.

A session of a kind that takes clients (kind ``http``) describes where its objects are as an
:class:`Endpoint` once its server runs, and asks the client for the :class:`Opener` the trial's
variant reads through (:meth:`Client.opener`). By default that opener opens one
:class:`Reader` per thread and process (:meth:`Client.open`: a connection, an SDK client) and
asks it for each object by key; a client with an opener of its own (the built-in one) returns
it instead.

Counts: the session counts retries and reads that failed for good across every process of a
trial from one log (the endpoint's ``policy``, an imgread.storage.http.retry.RetryPolicy); a reader
that retries on its own notes each retry with ``endpoint.note("retry", reason, seconds)`` and
each read it gives up on with ``endpoint.note("fail", reason, 0.0)``, so the kind's counts hold
them as they hold the built-in reader's.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from imgread.storage.base import Opener, PerThread

ASYNC_THREADS = 64  # an asyncio reader of a blocking client without a limit: threads at most


def key_of(root: str, path: str, kind: str = "http") -> str:
    """The object key of ``path`` under ``root``: its relative path; OSError naming both where
    it is not under the root."""
    rel = os.path.relpath(path, root)
    if rel == "." or rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise OSError(f"{kind} storage: {path} is not under the dataset root {root}")
    return rel


@dataclass(frozen=True)
class Endpoint:
    """Where a session serves its objects, as a client needs it; picklable (workers get it).

    A file ``root/a/b.jpg`` of the dataset is the object with key ``a/b.jpg``, served at
    ``base_url + "/a/b.jpg"`` (URL-quoted)."""

    profile: str  # the storage profile's name (for messages)
    kind: str  # the storage kind serving it ("http")
    base_url: str  # http://10.213.0.2:8080, https://... with TLS
    host: str
    port: int
    root: str  # the dataset's root folder
    cafile: str | None  # None, or the one certificate (PEM) to trust with TLS
    # The profile's imgread.storage.http.retry.RetryPolicy (retries, backoff_ms, cap_ms,
    # timeout_s, and the log the session counts from); not imported: the kinds import this
    policy: Any
    # The S3 clients' view: the bucket the dataset is served as (path style, /<bucket>/<key>),
    # the region they are told, and a folder of the trial's holding the empty HOME and AWS
    # config and credentials files they are pointed at ("": none made)
    bucket: str = ""
    region: str = ""
    sdk_home: str = ""

    def key(self, path: str) -> str:
        """The object key of ``path`` under the root (:func:`key_of`)."""
        return key_of(self.root, path, self.kind)

    def note(self, what: str, reason: str, waited: float) -> None:
        """Count one retry (``what`` "retry", with the seconds waited before it) or one read
        given up on ("fail") for the trial's counts."""
        self.policy.note(what, reason, waited)


class Reader:
    """One thread's handle on the store (a connection, an SDK client): made by
    :meth:`Client.open` where it is used, never pickled."""

    def read(self, key: str) -> bytes:
        """The whole object ``key``; OSError (FileNotFoundError for a missing key) otherwise."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the handle's connections (no-op where there are none)."""


class Client:
    """One storage client. Subclasses set ``name``, ``description`` and ``kinds`` and implement
    :meth:`open` (or :meth:`opener`, for a client with an opener of its own)."""

    name: str = ""
    description: str = ""  # one line: the library and how it reads
    kinds: tuple[str, ...] = ()  # the storage kinds it reads, e.g. ("http",)
    # Who counts its retries: "client" (it notes each with endpoint.note) or "proxy" (the SDK
    # does not tell: they are counted at the fault proxy, the failed exchanges it answered)
    retries_counted: str = "client"

    def missing(self) -> str | None:
        """Why this machine cannot use the client (one line: what to install), or None."""
        return None

    def settings(self, endpoint: Endpoint) -> dict[str, Any]:
        """The client's own settings for the record (library version, retries, pool)."""
        return {}

    def open(self, endpoint: Endpoint) -> Reader:
        """A reader of ``endpoint``'s objects for the calling thread and process."""
        raise NotImplementedError

    def opener(self, endpoint: Endpoint) -> Opener:
        """The opener a trial reads ``endpoint`` through: by default a
        :class:`ClientOpener` making one :meth:`open` reader per thread and process."""
        return ClientOpener(self, endpoint)


def _open_reader(client: Client, endpoint: Endpoint) -> Reader:
    return client.open(endpoint)


class ClientOpener(Opener):
    """The opener of a client that reads through per-thread :class:`Reader` objects: a path
    under the root is read as its key. Picklable where the client is (an instance at a
    module's top level, as an entry point names it)."""

    def __init__(self, client: Client, endpoint: Endpoint):
        self.client, self.endpoint = client, endpoint
        self._readers = PerThread(functools.partial(_open_reader, client, endpoint))

    def __getstate__(self):
        return {"client": self.client, "endpoint": self.endpoint}

    def __setstate__(self, state):
        self.__init__(state["client"], state["endpoint"])

    def read(self, path: str) -> bytes:
        """The bytes of the object of ``path``, through this thread's reader."""
        return self._readers.get().read(self.endpoint.key(path))

    def async_reader(self, limit: int):
        """The blocking reads run in a thread pool of ``limit`` threads (0: ASYNC_THREADS)."""
        return AsyncClientReader(self, limit)

    def close(self) -> None:
        """Close every reader this process opened."""
        for reader in self._readers.each():
            reader.close()


class AsyncClientReader:
    """asyncio reads of a blocking client: each read runs in a thread of its own pool (its
    own reader per thread), at most ``limit`` at once. Made inside the running event loop."""

    def __init__(self, opener: ClientOpener, limit: int):
        self.loop = asyncio.get_running_loop()  # the contract: made inside the loop
        self.opener = opener
        self.pool = ThreadPoolExecutor(max_workers=limit or ASYNC_THREADS)

    async def read(self, path: str) -> bytes:
        """The bytes of the object of ``path``."""
        return await self.loop.run_in_executor(self.pool, self.opener.read, path)

    async def close(self) -> None:
        """Stop the pool's threads (every read has ended) and close this process's readers."""
        self.pool.shutdown(wait=True)
        self.opener.close()
