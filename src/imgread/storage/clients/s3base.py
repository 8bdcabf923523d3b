"""What the three S3 clients share: an opener that isolates the trial's environment
(:mod:`imgread.storage.clients.s3env`), keeps one SDK client per process (boto3's, obstore's
store, s3torchconnector's S3Client are each thread-safe and pool their own connections), reads
a path as its key in the session's bucket, and runs asyncio reads in a thread pool where the
library has no async API of its own."""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from typing import Any

from imgread.storage.base import Opener
from imgread.storage.clients.base import AsyncClientReader, Client, Endpoint
from imgread.storage.clients.s3env import Isolated, isolate


class S3Client(Client):
    """An S3 client of kind http's emulated store: subclasses set the names and implement
    :meth:`make` (the process's SDK client) and :meth:`get` (one object's bytes)."""

    kinds = ("http",)
    module = ""  # the library's import name, for missing()
    # False: the library's runtime does not survive a fork once used (obstore's tokio): a
    # process forked after its parent read through it fails at once instead of hanging
    fork_safe = True
    package = ""  # what pip installs

    def missing(self) -> str | None:
        """Where the library does not import: what to install."""
        if importlib.util.find_spec(self.module) is None:
            return f"the {self.module} library is not installed: pip install {self.package}"
        return None

    def version(self) -> str:
        """The library's version."""
        from importlib.metadata import version

        return version(self.package)

    def preload(self, endpoint: Endpoint) -> None:
        """Before the clock, in the trial's process: import the library (its workers, forked,
        inherit it), so that the first timed read does not pay for the import."""
        importlib.import_module(self.module)

    def make(self, endpoint: Endpoint, pool: int) -> Any:
        """This process's SDK client of ``endpoint``, ``pool`` requests in flight at most."""
        raise NotImplementedError

    def get(self, handle: Any, endpoint: Endpoint, key: str) -> bytes:
        """The whole object ``key`` of the bucket through ``handle``."""
        raise NotImplementedError

    def opener(self, endpoint: Endpoint) -> Opener:
        """An :class:`S3Opener`: the trial's environment isolated from here on."""
        return S3Opener(self, endpoint)


class S3Opener(Opener):
    """One SDK client per process, made at its first read, sized to the threads the process
    runs then (a pool of N threads started before the clock: N requests in flight) or to an
    asyncio reader's limit; a path under the root read as its key. Picklable: only the client
    and the endpoint travel, each worker makes its own SDK client."""

    def __init__(self, client: S3Client, endpoint: Endpoint, isolated: bool = True):
        self.client, self.endpoint = client, endpoint
        self.isolated: Isolated | None = None
        if isolated:  # the trial's process, before its variant starts
            self.isolated = isolate(endpoint)
            client.preload(endpoint)
        self.pool = 0  # requests in flight one process may have (0: its threads at first read)
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"client": self.client, "endpoint": self.endpoint, "pool": self.pool}

    def __setstate__(self, state):
        # a worker inherits the isolated environment: nothing to set or put back
        self.__init__(state["client"], state["endpoint"], isolated=False)
        self.pool = state["pool"]

    def handle(self) -> Any:
        """This process's SDK client (made on first use)."""
        pid = os.getpid()
        handle = self._handles.get(pid)
        if handle is None:
            if not self.client.fork_safe and self._handles:
                raise OSError(
                    f"storage client {self.client.name}: this process (pid {pid}) was forked "
                    f"after its parent read through {self.client.module}, whose runtime does "
                    "not survive a fork; start workers before the first read, or use the "
                    "spawn or forkserver start method"
                )
            with self._lock:
                handle = self._handles.get(pid)
                if handle is None:
                    pool = self.pool or max(threading.active_count(), 1)
                    handle = self._handles[pid] = self.client.make(self.endpoint, pool)
        return handle

    def read(self, path: str) -> bytes:
        """The bytes of the object of ``path``."""
        return self.client.get(self.handle(), self.endpoint, self.endpoint.key(path))

    def async_reader(self, limit: int):
        """The blocking reads in a pool of ``limit`` threads (0: ASYNC_THREADS), the SDK
        client sized to it (the library has no asyncio API, or the client says otherwise)."""
        reader = AsyncClientReader(self, limit)
        self.pool = reader.pool._max_workers
        return reader

    def close(self) -> None:
        """Drop this process's SDK client (its connections close with it) and, in the trial's
        process, put the environment back."""
        handle = self._handles.pop(os.getpid(), None)
        closer = getattr(handle, "close", None)
        if callable(closer):
            closer()
        if self.isolated is not None:
            self.isolated.restore()
