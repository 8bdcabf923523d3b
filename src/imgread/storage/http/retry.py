"""How kind http's readers retry: the policy (capped exponential backoff with full jitter, as
the AWS SDKs' standard mode), which failures are retried and their short names (the reasons of
the counts), and the log every reader of a trial writes a line per retry to, so the session
counts them across processes and threads after the clock (:func:`read_retry_log`)."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
from dataclasses import dataclass
from typing import Any

REQUEST_TIMEOUT_S = 30.0  # per socket operation: nothing can hang a reader
RETRY_STATUS = (500, 502, 503, 504)  # what the S3 SDKs retry among answers (and no answer)


class ReadFailed(OSError):
    """A read that failed for good: its last reason, after every attempt the policy allows."""


class Retryable(OSError):
    """One attempt failed in a way a store's client retries; ``reason`` is its short name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_response(url: str, status: int, length: str | int | None, body_len: int) -> None:
    """Raise for an answer that is not the whole object: FileNotFoundError (404),
    PermissionError (403), Retryable (500/502/503/504, a short body), OSError (any other)."""
    if status == 404:
        raise FileNotFoundError(f"GET {url}: HTTP 404 (no such object)")
    if status == 403:
        raise PermissionError(
            f"GET {url}: HTTP 403 (the server's workers run as the dataset root's owner: "
            "can that user reach and read this file?)"
        )
    if status in RETRY_STATUS:
        raise Retryable(str(status), f"GET {url}: HTTP {status}")
    if status != 200:
        raise OSError(f"GET {url}: HTTP {status}")
    if length is None or int(length) != body_len:
        raise Retryable(
            "short-body", f"GET {url}: short body, {body_len} bytes of Content-Length {length}"
        )


def reason_of(exc: BaseException) -> str:
    """The short name of a failed attempt, for the counts (aiohttp's connection errors carry
    the OSError they wrap as ``os_error``)."""
    if isinstance(exc, Retryable):
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
        """The jittered wait after failed attempt ``k``, seconds."""
        return rng.uniform(0.0, min(self.cap_ms, self.base_ms * 2**k)) / 1000.0

    def note(self, what: str, reason: str, waited: float) -> None:
        """One line of the log (``retry`` or ``fail``); nothing without a log."""
        if self.log is None:
            return
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {what} {reason} {waited:.6f}\n".encode())
        finally:
            os.close(fd)

    def backoff(self, url: str, exc: Retryable, k: int, waited: float, rng) -> float:
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
