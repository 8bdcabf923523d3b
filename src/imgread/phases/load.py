"""Phase ``load``: read the compressed bytes of each file from a cold page cache into a
``BytesIO`` (the study's first stage); results = {path: BytesIO}."""

from __future__ import annotations

import asyncio
import io
import os
import statistics

import aiofiles

from imgread.errors import VerificationError
from imgread.phases import base
from imgread.pools import Pooled, Runner, Sequential, thread_pool


def read_bytes(path: str) -> io.BytesIO:
    """Read one file into memory, as the study's sequential loader did."""
    with open(path, "rb") as fh:
        return io.BytesIO(fh.read())


def _read_job(job) -> io.BytesIO:
    return read_bytes(job.path)


async def _aio_read(path: str) -> tuple[str, io.BytesIO]:
    async with aiofiles.open(path, "rb") as fh:
        data = await fh.read()
    # The study zipped results with a differently ordered list of names; the pair is kept here.
    return path, io.BytesIO(data)


def asyncio_default_workers() -> int:
    """The size of the thread pool asyncio creates by default (min(32, cores + 4))."""
    return min(32, (os.cpu_count() or 1) + 4)


class AsyncioRunner(Runner):
    """aiofiles + asyncio.gather over all files, on a fresh event loop.

    aiofiles runs each blocking read in the loop's default thread pool; that pool (the size
    asyncio picks by default) is created and its threads started before the clock starts.
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.concurrency = asyncio_default_workers()
        self.loop.set_default_executor(thread_pool(self.concurrency, "imgread-aio"))

    def run(self, jobs):
        async def gather_all():
            return await asyncio.gather(*(_aio_read(j.path) for j in jobs))

        return dict(self.loop.run_until_complete(gather_all()))

    def close(self):
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class LoadPhase(base.Phase):
    name = "load"
    description = "read compressed bytes from a cold page cache"
    cache_state = "cold"
    rate = ("mb_per_s", "MB/s")
    ceiling = "device"
    tables = (
        base.Table(
            "load_table.md",
            "imgread.tables.load:load_table",
            title="Load: sequential vs asyncio (mean of repetitions)",
        ),
    )
    bench = ("imgread.phases.load:bench_cold_load",)
    figures = {
        "load_time": "imgread.figures.load:load_time",
        "residency": "imgread.figures.load:residency",
        "memory_load": "imgread.figures.memory:memory_vs_workers",
    }
    variants = {
        v.name: v
        for v in (
            base.Variant(
                "sequential",
                False,
                lambda w, p, jobs: Sequential(_read_job),
                "open/read each file into a BytesIO, one after another (the study's baseline)",
            ),
            base.Variant(
                "asyncio",
                False,
                lambda w, p, jobs: AsyncioRunner(),
                "aiofiles + asyncio.gather over all files (the study's parallel loader)",
            ),
            base.Variant(
                "threads",
                True,
                lambda w, p, jobs: Pooled(thread_pool(w), _read_job, w),
                "ThreadPoolExecutor(workers) reading files: several requests in flight",
            ),
        )
    }

    def verify(self, results, root, entries, params, inputs):
        expected = base.expect_paths(self.name, results, root, entries)
        total = 0
        for path, value in results.items():
            got = value.getbuffer().nbytes
            if got != expected[path].bytes:
                raise VerificationError(
                    f"load: {path} read {got} bytes, manifest says {expected[path].bytes}"
                )
            total += got
        return base.Verified(len(results), total, 0)


# --------------------------------------------------------------------------- make bench


def bench_cold_load(m, manifest, args, trial) -> None:
    """make bench: cold-load MB/s of sequential, asyncio and threads(8) on 300 images."""
    n300 = min(300, len(m))
    print(f"\n## cold load of {n300} images (fadvise flush, {args.repeats} trials each)")
    for variant, workers in [("sequential", 1), ("asyncio", 1), ("threads", 8)]:
        recs = [trial(manifest, variant, n300, workers, i) for i in range(args.repeats)]
        mbs = [rec["mb_per_s"] for rec in recs]
        print(
            f"{variant:>10}({workers}) median {statistics.median(mbs):8.1f} MB/s  "
            f"(all: {', '.join(f'{x:.0f}' for x in mbs)}; resident before "
            f"{max(rec['resident_fraction_before'] for rec in recs):.4f})"
        )
