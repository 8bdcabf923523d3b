"""The reader variants: one registry, one entry per (phase, variant).

A variant is started once (``start(workers)``: pools created and every worker proven alive, the
start-up a trial records apart), then ``run(paths)`` does exactly the timed work and returns
its results keyed by path, which the trial checks against the manifest after the clock stops.

- phase ``load``: read the compressed bytes of each file into a ``BytesIO`` (the study's
  first stage), results = {path: BytesIO}.
- phase ``decode``: Pillow ``Image.open(path).convert("RGB")`` (the study's second stage),
  the image discarded at once, results = {path: decoded pixel count}.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import aiofiles
from PIL import Image

from imgread.errors import ImageDecodeError

PHASES = ("load", "decode")
RENDEZVOUS_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- the work itself


def read_bytes(path: str) -> io.BytesIO:
    """Read one file into memory, as the study's sequential loader did."""
    with open(path, "rb") as fh:
        return io.BytesIO(fh.read())


def decode_pixels(path: str) -> int:
    """Open and decode one image to RGB, discard it, and return its pixel count."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            return rgb.width * rgb.height
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for bad data
        raise ImageDecodeError(f"{path}: {type(exc).__name__}: {exc}") from None


async def _aio_read(path: str) -> tuple[str, io.BytesIO]:
    async with aiofiles.open(path, "rb") as fh:
        data = await fh.read()
    # The study zipped results with a differently ordered list of names; the pair is kept here.
    return path, io.BytesIO(data)


# --------------------------------------------------------------------------- pools

_BARRIER = None  # set in each process-pool worker by _init_process


def _init_process(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _process_rendezvous() -> int:
    _BARRIER.wait(RENDEZVOUS_TIMEOUT_S)
    return os.getpid()


def _prestart(executor: Executor, workers: int, task: Callable[[], int]) -> None:
    """Submit one task per worker that only returns once all are running: every worker is up.

    Pools start workers lazily; without this their creation would land inside the timed run.
    """
    idents = {f.result() for f in [executor.submit(task) for _ in range(workers)]}
    if len(idents) != workers:
        raise RuntimeError(f"expected {workers} distinct workers, saw {len(idents)}")


def _thread_pool(workers: int, prefix: str = "imgread") -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    barrier = threading.Barrier(workers)

    def rendezvous() -> int:
        barrier.wait(RENDEZVOUS_TIMEOUT_S)
        return threading.get_ident()

    _prestart(pool, workers, rendezvous)
    return pool


def asyncio_default_workers() -> int:
    """The size of the thread pool asyncio creates by default (min(32, cores + 4))."""
    return min(32, (os.cpu_count() or 1) + 4)


def process_start_method() -> str:
    """The multiprocessing start method the process pools use (the platform default)."""
    return mp.get_start_method(allow_none=False)


def _process_pool(workers: int) -> ProcessPoolExecutor:
    ctx = mp.get_context()
    barrier = ctx.Barrier(workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_process, initargs=(barrier,)
    )
    try:
        _prestart(pool, workers, _process_rendezvous)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


# --------------------------------------------------------------------------- runners


class Runner:
    """A started variant: ``run`` is the timed work, ``close`` releases pools (untimed)."""

    concurrency = 1  # requests or images in flight at once

    def run(self, paths: list[str]) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever ``start`` created."""


class _Sequential(Runner):
    def __init__(self, fn: Callable[[str], object]):
        self.fn = fn

    def run(self, paths):
        return {p: self.fn(p) for p in paths}


class _Pooled(Runner):
    def __init__(self, pool: Executor, fn: Callable[[str], object], workers: int):
        self.pool, self.fn, self.concurrency = pool, fn, workers

    def run(self, paths):
        return dict(zip(paths, self.pool.map(self.fn, paths), strict=True))

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Asyncio(Runner):
    """aiofiles + asyncio.gather over all files, on a fresh event loop.

    aiofiles runs each blocking read in the loop's default thread pool; that pool (the size
    asyncio picks by default) is created and its threads started before the clock starts.
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.concurrency = asyncio_default_workers()
        self.loop.set_default_executor(_thread_pool(self.concurrency, "imgread-aio"))

    def run(self, paths):
        async def gather_all():
            return await asyncio.gather(*(_aio_read(p) for p in paths))

        return dict(self.loop.run_until_complete(gather_all()))

    def close(self):
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Variant:
    """One way of doing a phase's work. ``parallel`` variants take a worker count."""

    phase: str
    name: str
    parallel: bool
    start: Callable[[int], Runner]
    description: str


VARIANTS: dict[tuple[str, str], Variant] = {}


def _register(phase, name, parallel, start, description) -> None:
    VARIANTS[(phase, name)] = Variant(phase, name, parallel, start, description)


_register(
    "load",
    "sequential",
    False,
    lambda w: _Sequential(read_bytes),
    "open/read each file into a BytesIO, one after another (the study's baseline)",
)
_register(
    "load",
    "asyncio",
    False,
    lambda w: _Asyncio(),
    "aiofiles + asyncio.gather over all files (the study's parallel loader)",
)
_register(
    "load",
    "threads",
    True,
    lambda w: _Pooled(_thread_pool(w), read_bytes, w),
    "ThreadPoolExecutor(workers) reading files: several requests in flight on the device",
)
_register(
    "decode",
    "sequential",
    False,
    lambda w: _Sequential(decode_pixels),
    "Pillow open + convert('RGB') of each file, one after another (the study's baseline)",
)
_register(
    "decode",
    "processes",
    True,
    lambda w: _Pooled(_process_pool(w), decode_pixels, w),
    "ProcessPoolExecutor(max_workers=workers), workers decode by path (the study's way)",
)
_register(
    "decode",
    "threads",
    True,
    lambda w: _Pooled(_thread_pool(w), decode_pixels, w),
    "ThreadPoolExecutor(workers): Pillow releases the GIL while decoding",
)


def variant_names(phase: str) -> list[str]:
    """Names of the variants registered for ``phase``."""
    return [name for (p, name) in VARIANTS if p == phase]


def get_variant(phase: str, name: str) -> Variant:
    """The registered variant; ValueError naming the allowed names otherwise."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
    try:
        return VARIANTS[(phase, name)]
    except KeyError:
        raise ValueError(
            f"unknown {phase} variant {name!r}; choose one of {', '.join(variant_names(phase))}"
        ) from None
