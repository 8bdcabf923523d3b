"""The storage client ``obstore``: Python bindings of the Rust ``object_store`` crate (reqwest
and tokio underneath), one ``S3Store`` per process, unsigned (``skip_signature``), path style
over plain HTTP (``allow_http``) to the session's endpoint in an explicit region. Blocking reads
are ``obstore.get(store, key).bytes()`` (threads, processes, DataLoader workers); the asyncio
readers use its own async API, ``await obstore.get_async(...)`` then ``bytes_async()``.

Retries: object_store's (``max_retries`` = the profile's retries, exponential backoff from
``backoff_ms`` to ``backoff_cap_ms``, base 2, on 5xx, 429 and connection errors, ``retry_timeout``
bounding them); it does not report them, so a trial counts them at the fault proxy (the failed
exchanges it answered). TLS: the session's certificate is added to the trusted roots
(``root_certificate``: object_store adds, it cannot replace the system's; the endpoint is an IP
literal with its own self-signed certificate, which no system root signs)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from imgread.storage.clients.base import Endpoint
from imgread.storage.clients.s3base import S3Client, S3Opener


class ObstoreClient(S3Client):
    """obstore's S3Store, one per process (see the module's docstring)."""

    name = "obstore"
    description = "obstore S3Store (Rust object_store): get, get_async; unsigned, path style"
    module = "obstore"
    package = "obstore"
    retries_counted = "proxy"
    fork_safe = False  # its tokio runtime's threads are not in a forked child

    def retry_config(self, endpoint: Endpoint) -> dict[str, Any]:
        """object_store's RetryConfig from the profile's policy."""
        p = endpoint.policy
        return {
            "max_retries": p.retries,
            "backoff": {
                "init_backoff": timedelta(milliseconds=max(p.base_ms, 1.0)),
                "max_backoff": timedelta(milliseconds=max(p.cap_ms, 1.0)),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=p.timeout_s * (p.retries + 1)),
        }

    def settings(self, endpoint: Endpoint) -> dict[str, Any]:
        """obstore's version and retry settings, for the record."""
        p = endpoint.policy
        return {
            "client_version": f"obstore {self.version()}",
            "client_retries": f"object_store max_retries {p.retries}, backoff {p.base_ms:g}-"
            f"{p.cap_ms:g} ms base 2 (counted at the fault proxy)",
            "client_pool": "one S3Store per process (reqwest's pool)",
        }

    def make(self, endpoint: Endpoint, pool: int) -> Any:
        """This process's S3Store of the session's bucket."""
        from obstore.store import S3Store

        options: dict[str, Any] = {
            "allow_http": True,
            "connect_timeout": timedelta(seconds=endpoint.policy.timeout_s),
            "timeout": timedelta(seconds=endpoint.policy.timeout_s),
        }
        if endpoint.cafile:
            with open(endpoint.cafile, "rb") as fh:
                options["root_certificate"] = fh.read()
        return S3Store(
            endpoint.bucket,
            endpoint=endpoint.base_url,
            region=endpoint.region,
            skip_signature=True,
            virtual_hosted_style_request=False,
            client_options=options,
            retry_config=self.retry_config(endpoint),
        )

    def get(self, handle: Any, endpoint: Endpoint, key: str) -> bytes:
        """The object's bytes (a blocking get)."""
        import obstore

        try:
            return bytes(obstore.get(handle, key).bytes())
        except FileNotFoundError:
            raise
        except Exception as exc:  # obstore's errors are its own classes, not OSError
            endpoint.note("fail", type(exc).__name__, 0.0)
            raise OSError(
                f"obstore: GET {endpoint.base_url}/{endpoint.bucket}/{key}: {exc}"
            ) from exc

    def opener(self, endpoint: Endpoint):
        """An opener whose asyncio reader is obstore's own async API."""
        return ObstoreOpener(self, endpoint)


class ObstoreOpener(S3Opener):
    """:class:`S3Opener` with obstore's asyncio reads."""

    def async_reader(self, limit: int):
        """obstore's get_async, at most ``limit`` requests in flight (0: no limit)."""
        return AsyncObstoreReader(self, limit)


class AsyncObstoreReader:
    """``await obstore.get_async(store, key)`` and ``bytes_async()``, ``limit`` at once at
    most (0: every read at once). Made inside the running event loop."""

    def __init__(self, opener: ObstoreOpener, limit: int):
        asyncio.get_running_loop()  # the contract: made inside the loop
        self.opener, self.store = opener, opener.handle()
        self.gate = asyncio.Semaphore(limit) if limit else None

    async def _get(self, key: str) -> bytes:
        import obstore

        result = await obstore.get_async(self.store, key)
        return bytes(await result.bytes_async())

    async def read(self, path: str) -> bytes:
        """The bytes of the object of ``path``."""
        endpoint = self.opener.endpoint
        key = endpoint.key(path)
        try:
            if self.gate is None:
                return await self._get(key)
            async with self.gate:
                return await self._get(key)
        except FileNotFoundError:
            raise
        except Exception as exc:
            endpoint.note("fail", type(exc).__name__, 0.0)
            raise OSError(
                f"obstore: GET {endpoint.base_url}/{endpoint.bucket}/{key}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Close this process's store (the opener's close)."""
        self.opener.close()


OBSTORE = ObstoreClient()
