"""Kind ``memory``: a play store that serves the dataset's bytes from a dict in the trial's
process, with an optional sleep per request. Kept for the contract tests (it needs nothing);
not a storage anyone measures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from imgread.storage import base


class MemoryOpener(base.Opener):
    def __init__(self, blobs: dict[str, bytes], delay_s: float):
        self.blobs, self.delay_s = blobs, delay_s

    def read(self, path: str) -> bytes:
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            return self.blobs[path]
        except KeyError:
            raise FileNotFoundError(f"memory store: no object {path}") from None

    def async_reader(self, limit: int):
        return _AsyncMemory(self, limit)


class _AsyncMemory:
    def __init__(self, opener: MemoryOpener, limit: int):
        self.opener, self.gate = opener, asyncio.Semaphore(limit or 1 << 30)

    async def read(self, path: str) -> bytes:
        async with self.gate:
            if self.opener.delay_s:
                await asyncio.sleep(self.opener.delay_s)
            return self.opener.blobs[path]

    async def close(self) -> None:
        pass


class MemorySession(base.Session):
    def __init__(self, root: Path, latency_ms: float):
        # the dataset's own files, not the links of a view onto them (ImageFolder's class folders)
        files = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
        blobs = {str(p): p.read_bytes() for p in files}
        self.latency_ms = latency_ms
        self.opener = MemoryOpener(blobs, latency_ms / 1000)

    def probe(self) -> base.Probe:
        t0 = time.perf_counter()
        key = next(iter(self.opener.blobs), None)
        times = []
        for _ in range(5 if key else 0):
            t = time.perf_counter()
            self.opener.read(key)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return base.Probe(
            latency_ms=times[len(times) // 2] if times else None,
            seconds=time.perf_counter() - t0,
        )


class MemoryKind(base.Kind):
    name = "memory"
    description = "an in-memory store for the contract tests (bytes from a dict, optional sleep)"
    needs = "nothing"
    settings = (
        base.Setting("latency_ms", float, 0.0, "sleep per request, ms", minimum=0, maximum=1000),
    )

    def open(self, profile: base.Profile, root: Path) -> base.Session:
        return MemorySession(root, profile.params["latency_ms"])

    def expected_latency_ms(self, profile: base.Profile) -> float | None:
        return profile.params["latency_ms"]


KIND = MemoryKind()
