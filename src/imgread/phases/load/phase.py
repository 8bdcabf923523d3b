"""Phase ``load``: read the compressed bytes of each image into a ``BytesIO`` (the study's
first stage), from a cold page cache; results = {path: BytesIO}.

The bytes come through the trial's storage (imgread.storage, grid key ``storage``): the files
where they are (``local``, the study's), a throttled volume, or an object store over http.
The readers are the ones people use: one after another (one keep-alive connection), a thread
pool (a connection per thread), asyncio (aiofiles for files, aiohttp for http; ``in_flight``
requests at once, 0: all at once as the study's gather), and a process pool (a connection per
process, the bytes pickled back).

Grid key ``shard_mb``: 0 reads the images as loose files (the study's); N reads the dataset's
tar shards of N MB (imgread.dataset.shards) whole, each a job like a file, and after the clock
splits every shard into its images, each checked against the manifest. The rate counts the
n images; the bytes (so MB/s) are the shards' (the last one may hold more than n images).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import statistics

from imgread.dataset import shards as shardlib
from imgread.errors import UserError, VerificationError
from imgread.phases import base
from imgread.storage.local import FileOpener
from imgread.trial.pools import Pooled, Runner, Sequential, process_pool, thread_pool


def _read_job(opener, job) -> io.BytesIO:
    return io.BytesIO(opener.read(job.path))


def _read_raw(opener, job) -> bytes:
    return opener.read(job.path)


def asyncio_default_workers() -> int:
    """The size of the thread pool asyncio creates by default (min(32, cores + 4))."""
    return min(32, (os.cpu_count() or 1) + 4)


class AsyncioRunner(Runner):
    """asyncio.gather over all images on a fresh event loop, reading with the storage's
    asyncio reader (aiofiles for files, aiohttp for http), ``in_flight`` at once (0: no limit).

    aiofiles runs each blocking read in the loop's default thread pool; that pool (the size
    asyncio picks by default, or ``in_flight`` threads where that is set) is created and its
    threads started before the clock starts, and so is the reader (aiohttp's session, its
    import): its connections open as its requests need them, as the other readers' do."""

    def __init__(self, opener, in_flight: int):
        self.opener, self.in_flight = opener, in_flight
        self.loop = asyncio.new_event_loop()
        threads = in_flight or asyncio_default_workers()
        self.loop.set_default_executor(thread_pool(threads, "imgread-aio"))
        self.concurrency = in_flight or threads  # for files; for a server, set by run()

        async def open_reader():
            return opener.async_reader(in_flight)

        self.reader = self.loop.run_until_complete(open_reader())

    def run(self, jobs):
        if not self.in_flight and not self.opener.local_files:
            self.concurrency = len(jobs)  # every request at once

        async def one(path):
            # The study zipped results with a differently ordered list of names; the pair is
            # kept here.
            return path, io.BytesIO(await self.reader.read(path))

        async def gather_all():
            return await asyncio.gather(*(one(j.path) for j in jobs))

        return dict(self.loop.run_until_complete(gather_all()))

    def close(self):
        self.loop.run_until_complete(self.reader.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class ProcessReader(Pooled):
    """A process pool of ``workers`` readers, each with its own connection; the bytes come
    back pickled through the pool's pipes (into a BytesIO in the trial's process)."""

    def __init__(self, opener, workers: int):
        super().__init__(process_pool(workers), functools.partial(_read_raw, opener), workers)

    def run(self, jobs):
        return {path: io.BytesIO(data) for path, data in super().run(jobs).items()}


def _opener(ctx):
    """The trial's storage opener (the files where they are outside a trial)."""
    return ctx.opener or FileOpener()


class LoadPhase(base.Phase):
    name = "load"
    description = "read compressed bytes from a cold page cache"
    cache_state = "cold"
    rate = ("mb_per_s", "MB/s")
    ceiling = "device"
    tables = (
        base.Table(
            "load_table.md",
            "imgread.phases.load.tables:load_table",
            title="Load: sequential vs asyncio (mean of repetitions)",
        ),
        base.Table(
            "load_storage.md",
            "imgread.phases.load.tables:storage_table",
            title="Load from each storage profile: the best reader, and when in flight pays",
            note="Per storage profile and number of images (medians over repetitions): "
            "sequential's rate; the fastest reader, its requests in flight, its rate and its "
            "fraction of the storage's ceiling (local: the device's); the fewest requests in "
            "flight at which asyncio and threads first reach 2x sequential. "
            "docs/storage.md says how each profile is emulated and probed.",
            every_storage=True,
        ),
    )
    bench = ("imgread.phases.load.phase:bench_cold_load",)
    figures = {
        "load_time": "imgread.phases.load.figures:load_time",
        "residency": "imgread.phases.load.figures:residency",
        "memory_load": "imgread.answer.figures.memory:memory_vs_workers",
        "load_in_flight": "imgread.answer.figures.storage:load_in_flight",
        "load_shards": "imgread.phases.load.figures:load_shards",
    }
    params = (
        base.STORAGE,
        base.CLIENT,  # the storage client on http profiles (redundant on local)
        base.Param(
            "in_flight",
            "0",
            None,
            "asyncio: requests in flight at most (0: all at once, the study's gather)",
            0,
        ),
        base.SHARD_MB,
    )
    job_keys = ("storage", "shard_mb")  # the answer has a row per storage and packing
    # A reader's start: the trial's context -> Runner, reading through its storage's opener
    variants = {
        v.name: v
        for v in (
            base.Variant(
                "sequential",
                False,
                lambda c: Sequential(functools.partial(_read_job, _opener(c))),
                "each image into a BytesIO, one after another (the study's baseline; one "
                "keep-alive connection over http)",
                allowed={"in_flight": ("0",)},
            ),
            base.Variant(
                "asyncio",
                False,
                lambda c: AsyncioRunner(_opener(c), int(c.params["in_flight"])),
                "asyncio.gather over all images (the study's parallel loader): aiofiles, or "
                "aiohttp over http; in_flight at once",
            ),
            base.Variant(
                "threads",
                True,
                lambda c: Pooled(
                    thread_pool(c.workers), functools.partial(_read_job, _opener(c)), c.workers
                ),
                "ThreadPoolExecutor(workers): several requests in flight (a connection each)",
                allowed={"in_flight": ("0",)},
            ),
            base.Variant(
                "processes",
                True,
                lambda c: ProcessReader(_opener(c), c.workers),
                "a process pool of readers (a connection each), the bytes pickled back",
                allowed={"in_flight": ("0",)},
            ),
        )
    }

    def jobs(self, ctx):
        mb = int(ctx.params.get("shard_mb", 0))
        if not mb:
            return super().jobs(ctx)
        index = shardlib.read_index(ctx.root, mb, ctx.dataset_id)
        covering = shardlib.covering(index, len(ctx.entries))
        return [base.Job(str(ctx.root / s.path), s.index) for s in covering]

    def check(self, ctx):
        params, workers, variant = ctx.params, ctx.workers, ctx.variant
        if (
            int(params.get("shard_mb", 0))
            and self.variants[variant].parallel
            and workers > len(ctx.jobs)
        ):
            raise UserError(
                f"load/{variant} with {workers} workers reads {len(ctx.jobs)} shards of "
                f"{params['shard_mb']} MB: fewer shards than workers leaves workers idle; "
                "use smaller shards, more images or fewer workers"
            )

    def verify(self, ctx, results):
        root, entries = ctx.root, ctx.entries
        mb = int(ctx.params.get("shard_mb", 0))
        if mb:
            return _verify_shards(results, root, entries, mb)
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


def _verify_shards(results, root, entries, mb: int) -> base.Verified:
    """Every shard read whole (its size and sha256 as indexed), split into its images, each
    of the first n checked against the manifest; the bytes are the shards'."""
    index = {str(root / s.path): s for s in shardlib.read_index(root, mb)}
    wanted = {str(root / s.path) for s in shardlib.covering(list(index.values()), len(entries))}
    if set(results) != wanted:
        raise VerificationError(
            f"load: read {len(results)} shards, expected the {len(wanted)} that hold the "
            f"first {len(entries)} images"
        )
    by_order = {e.order: e for e in entries}
    images = total = held = 0
    for path, value in results.items():
        data = value.getvalue()
        if shardlib.sha256_of(data) != index[path].sha256:
            raise VerificationError(f"load: {path} differs from the shard index (sha256)")
        count, _ = shardlib.check_images(index[path], data, by_order, len(entries))
        images += count
        total += len(data)
        held += index[path].count
    if images != len(entries):
        raise VerificationError(f"load: the shards held {images} of the {len(entries)} images")
    return base.Verified(
        images,
        total,
        0,
        {"shards_read": len(results), "shard_images_read": held},
    )


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
