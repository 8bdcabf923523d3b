"""Kind http's own reader, the built-in storage client ``imgread``: ``GET /<path under the
dataset root>`` over keep-alive HTTP/1.1, http.client per thread and process, aiohttp for
asyncio, optionally over TLS trusting only the session's certificate; every read retried as
the profile's :class:`~imgread.storage.http.retry.RetryPolicy` says."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import random
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imgread.storage import base
from imgread.storage.clients.base import Client, Endpoint, Reader, key_of
from imgread.storage.http.retry import (
    REQUEST_TIMEOUT_S,
    Retryable,
    RetryPolicy,
    check_response,
    reason_of,
)

ASYNC_TIMEOUT_FACTOR = 2.0  # asyncio readers: x the profile timeout_s (see AsyncHttpReader)


def connect(
    address: str, port: int, cafile: str | None, timeout_s: float = REQUEST_TIMEOUT_S
) -> http.client.HTTPConnection:
    """A keep-alive connection to the session's server (connects on the first request)."""
    if cafile is None:
        return http.client.HTTPConnection(address, port, timeout=timeout_s)
    context = ssl.create_default_context(cafile=cafile)  # trusts exactly the session's cert
    return http.client.HTTPSConnection(address, port, timeout=timeout_s, context=context)


def get(
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
                raise Retryable(reason_of(exc), f"GET {url}: {exc!r}") from exc
            check_response(url, resp.status, resp.getheader("Content-Length"), len(body))
            return body
        except Retryable as exc:
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
            functools.partial(connect, address, port, cafile, self.policy.timeout_s)
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
        return target_of(self.root, path)

    def read(self, path: str) -> bytes:
        """The file's bytes, over this thread's connection."""
        target = self.target(path)
        return get(self._conns.get(), target, self.base_url + target, self.policy, self._rng)

    def async_reader(self, limit: int):
        """An aiohttp reader, at most ``limit`` requests in flight (0: no limit)."""
        return AsyncHttpReader(self, limit)

    def close(self) -> None:
        """Close this process's connections."""
        for conn in self._conns.each():
            with contextlib.suppress(Exception):
                conn.close()


def target_of(root: str, path: str) -> str:
    """The request target of ``path`` under ``root``: ``/`` + its relative path, URL-quoted;
    OSError where it is not under root."""
    return "/" + quote(key_of(root, path, "http"), safe="/")


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
            raise Retryable(reason_of(exc), f"GET {url}: {exc!r}") from exc
        check_response(url, status, length, len(body))
        return body

    async def read(self, path: str) -> bytes:
        """The file's bytes, retried as the opener's policy says."""
        url = self.opener.base_url + self.opener.target(path)
        policy, waited = self.opener.policy, 0.0
        for k in range(policy.retries + 1):
            try:
                return await self._attempt(url)
            except Retryable as exc:
                wait = policy.backoff(url, exc, k, waited, self.opener._rng)
                waited += wait
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the aiohttp session (its connections)."""
        await self.session.close()


class _ConnectionReader(Reader):
    """The contract's per-thread reader over one keep-alive connection (the opener keeps its
    own per thread; this one is for callers of :meth:`ImgreadClient.open`)."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.conn = connect(
            endpoint.host, endpoint.port, endpoint.cafile, endpoint.policy.timeout_s
        )
        self.rng = random.Random()

    def read(self, key: str) -> bytes:
        """The object ``key``, retried as the endpoint's policy says."""
        target = "/" + quote(key, safe="/")
        url = self.endpoint.base_url + target
        return get(self.conn, target, url, self.endpoint.policy, self.rng)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class ImgreadClient(Client):
    """The built-in storage client: the project's own reader (:class:`HttpOpener`)."""

    name = "imgread"
    description = "the project's own reader: http.client per thread and process, aiohttp"
    kinds = ("http",)

    def open(self, endpoint: Endpoint) -> Reader:
        """One keep-alive connection to the endpoint."""
        return _ConnectionReader(endpoint)

    def opener(self, endpoint: Endpoint) -> base.Opener:
        """An HttpOpener on the endpoint's server, certificate and retry policy."""
        return HttpOpener(
            endpoint.host, endpoint.port, endpoint.root, endpoint.cafile, endpoint.policy
        )


IMGREAD = ImgreadClient()
