"""The storage client ``boto3``: AWS's Python SDK, as its users read an object,
``client.get_object(Bucket=..., Key=...)["Body"].read()``, one client per process shared by its
threads, unsigned, path style, the session's endpoint and an explicit region.

Its retries are botocore's standard mode (``total_max_attempts`` = the profile's retries + 1:
capped exponential backoff with full jitter, base 1 s x 2^k up to 20 s, on 500/502/503/504,
throttling codes, resets, timeouts), counted from what botocore reports
(``ResponseMetadata.RetryAttempts``) with the reasons its ``needs-retry`` event saw. botocore
does not retry a body that breaks after the headers (a reset mid-body): that is retried here,
as the profile's policy says, and counted so (as a user's retry decorator would)."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from imgread.storage.clients.base import Endpoint
from imgread.storage.clients.s3base import S3Client
from imgread.storage.http.retry import Retryable, reason_of

MIN_POOL = 10  # botocore's own default max_pool_connections


class Boto3Client(S3Client):
    """boto3's S3 client, one per process (see the module's docstring)."""

    name = "boto3"
    description = "boto3 get_object, one client per process, unsigned, path style"
    module = "boto3"
    package = "boto3"

    def config(self, endpoint: Endpoint, pool: int):
        """botocore's Config for ``endpoint``: unsigned, path style, the pool, the retries."""
        from botocore import UNSIGNED
        from botocore.config import Config

        policy = endpoint.policy
        return Config(
            signature_version=UNSIGNED,
            s3={"addressing_style": "path"},
            region_name=endpoint.region,
            max_pool_connections=max(pool, MIN_POOL),
            retries={"total_max_attempts": policy.retries + 1, "mode": "standard"},
            connect_timeout=policy.timeout_s,
            read_timeout=policy.timeout_s,
            proxies={},
        )

    def settings(self, endpoint: Endpoint) -> dict[str, Any]:
        """boto3's version and retry settings, for the record."""
        return {
            "client_version": f"boto3 {self.version()}",
            "client_retries": "botocore standard, total_max_attempts "
            f"{endpoint.policy.retries + 1}",
            "client_pool": "max_pool_connections: threads per process (asyncio: its limit), "
            f">= {MIN_POOL}",
        }

    def preload(self, endpoint: Endpoint) -> None:
        """Import boto3 and load S3's service model into this process's session (a throwaway
        client), so that the client made at the first read finds it loaded."""
        client = _session(endpoint.region).client(
            "s3", endpoint_url=endpoint.base_url, config=self.config(endpoint, MIN_POOL)
        )
        client.close()

    def make(self, endpoint: Endpoint, pool: int) -> Any:
        """A botocore S3 client of this process's own boto3 session (not boto3's default)."""
        client = _session(endpoint.region).client(
            "s3",
            endpoint_url=endpoint.base_url,
            config=self.config(endpoint, pool),
            verify=endpoint.cafile if endpoint.cafile else None,
        )
        seen = _Seen()
        client.meta.events.register("needs-retry.s3.GetObject", seen.attempt)
        client.imgread_seen = seen
        return client

    def get(self, handle: Any, endpoint: Endpoint, key: str) -> bytes:
        """The object's bytes; a body cut short is fetched again as the policy says."""
        policy, waited = endpoint.policy, 0.0
        url = f"{endpoint.base_url}/{endpoint.bucket}/{key}"
        for k in range(policy.retries + 1):
            try:
                return _get_once(handle, endpoint, key, url)
            except Retryable as exc:
                wait = policy.backoff(url, exc, k, waited, _RNG)
                waited += wait
                time.sleep(wait)
        raise AssertionError("unreachable")


_SESSIONS: dict[int, Any] = {}  # pid -> this process's boto3 session (its loaded models)


def _session(region: str):
    import boto3

    pid = os.getpid()
    if pid not in _SESSIONS:
        _SESSIONS[pid] = boto3.session.Session(region_name=region)
    return _SESSIONS[pid]


class _Seen:
    """The reasons of the attempts botocore's ``needs-retry`` event saw fail, per thread."""

    def __init__(self):
        self.local = threading.local()

    def attempt(self, response=None, caught_exception=None, **_):
        """Note why an attempt failed (nothing where it succeeded); never decides a retry."""
        reasons = self.take_list()
        if caught_exception is not None:
            reasons.append(reason_of(caught_exception))
        elif response is not None:
            status = response[0].status_code
            if status >= 500 or status == 429:
                reasons.append(str(status))
        return None

    def take_list(self) -> list[str]:
        """This thread's reasons so far (the list itself)."""
        if not hasattr(self.local, "reasons"):
            self.local.reasons = []
        return self.local.reasons


def _get_once(handle: Any, endpoint: Endpoint, key: str, url: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    seen = handle.imgread_seen
    seen.take_list().clear()
    try:
        resp = handle.get_object(Bucket=endpoint.bucket, Key=key)
    except ClientError as exc:
        _note_retries(endpoint, seen, exc.response.get("ResponseMetadata", {}))
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"boto3: GET {url}: no such object") from exc
        reasons = seen.take_list()
        endpoint.note("fail", reasons[-1] if reasons else code or "error", 0.0)
        raise OSError(f"boto3: GET {url}: {exc}") from exc
    except BotoCoreError as exc:
        endpoint.note("fail", reason_of(getattr(exc, "kwargs", {}).get("error", exc)), 0.0)
        raise OSError(f"boto3: GET {url}: {exc}") from exc
    _note_retries(endpoint, seen, resp["ResponseMetadata"])
    length = resp.get("ContentLength")
    try:
        body = resp["Body"].read()
    except (BotoCoreError, OSError) as exc:
        raise Retryable(reason_of(exc), f"boto3: GET {url}: body: {exc!r}") from exc
    if length is not None and len(body) != length:
        raise Retryable("short-body", f"boto3: GET {url}: {len(body)} of {length} bytes")
    return body


def _note_retries(endpoint: Endpoint, seen: _Seen, meta: dict) -> None:
    """One retry noted per attempt botocore retried, with the reasons its event saw (the
    seconds it waited are botocore's own and not reported: 0)."""
    retried = int(meta.get("RetryAttempts", 0) or 0)
    reasons = seen.take_list()
    for i in range(retried):
        endpoint.note("retry", reasons[i] if i < len(reasons) else "unknown", 0.0)


_RNG = random.Random()  # the jitter of a body's retry
BOTO3 = Boto3Client()
