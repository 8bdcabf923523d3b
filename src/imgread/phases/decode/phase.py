"""Phase ``decode``: decode each image from a warm page cache with a decoder of the registry,
to its full size or the model's 224 crop, and deliver the pixels (or only their count).

Grid keys: ``decoder`` (imgread.decoders), ``output`` (full | crop224), ``allocator`` (default |
tuned: imgread.decoders.allocator, set in the trial's process and every worker before the clock),
``delivery``:
- ``discard``: the study's way: the worker decodes and throws the pixels away; only a pixel
  count comes back;
- ``pixels``: the caller holds every decoded array when the clock stops. How they come back is
  the variant's business: ``sequential`` and ``threads`` share the address space;
  ``processes`` pickles each array through the pool's pipe (ProcessPoolExecutor.map);
  ``processes-shm`` has its workers write into one ``multiprocessing.shared_memory`` block the
  parent maps, so no pixels cross a pipe. The block has one slot per image and is faulted in
  before the clock, by the parent and by every worker; each worker decodes into its slot with
  at most one copy and no buffer allocated per image (Decoder.decode_into), so the timed run
  pays for decoding and that one copy only, and the check after the clock reads every slot.

Full-size delivery of many images may not fit in memory (900 x 36 MB = 33 GB): the trial
refuses before the clock, naming n, the bytes needed and the memory available.
"""

from __future__ import annotations

import functools
import mmap
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker, shared_memory
from typing import NamedTuple

import numpy as np

from imgread.decoders import (
    DECODERS,
    OUTPUTS,
    allocator,
    checksum,
    get_decoder,
    output_shape,
    reserve,
    warm_up,
)
from imgread.decoders.reference import read_reference, reference_checksums
from imgread.errors import UserError, VerificationError
from imgread.phases import base
from imgread.trial.pools import (
    Pooled,
    Runner,
    Sequential,
    named_death,
    process_pool,
    shutdown_pool,
    thread_pool,
)

DELIVERIES = ("discard", "pixels")
MEMORY_HEADROOM = 0.8  # pixels may use at most this fraction of MemAvailable


# --------------------------------------------------------------------------- the work


def decode_job(decoder: str, output: str, delivery: str, job: base.Job):
    """Decode one image: its array (delivery ``pixels``) or only its pixel count."""
    d = DECODERS[decoder]
    if delivery == "discard":
        return d.count(job.path, output)
    return d.decode(job.path, output)


_ATTACHED: dict[str, shared_memory.SharedMemory] = {}  # per worker process: name -> segment


def _attach(name: str) -> shared_memory.SharedMemory:
    """Map the parent's segment in a worker without registering it with the resource tracker
    (Python < 3.13 would otherwise unlink or warn about a segment the worker does not own)."""
    shm = _ATTACHED.get(name)
    if shm is None:
        register = resource_tracker.register
        resource_tracker.register = lambda *a, **k: None
        try:
            shm = shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register
        _ATTACHED[name] = shm
    return shm


class _Slot(NamedTuple):
    """A job with the byte offset of its slot in the shared segment."""

    path: str
    index: int
    shape: tuple[int, int, int]
    offset: int


def fault_in(buf) -> None:
    """Touch every page of ``buf`` (a write to each page's first byte), so that this process
    has all of it mapped and no page fault is left for the timed run."""
    pages = np.frombuffer(buf, np.uint8)
    pages[:: mmap.PAGESIZE] = 0
    del pages  # no view of the segment may outlive this (SharedMemory.close refuses)


def init_shm_worker(decoder, output, allocator_name, name, largest) -> None:
    """A worker's start (before the clock): its allocator, the decoder warmed up, the whole
    segment mapped and faulted in, its scratch memory for the largest image reserved."""
    warm_up(decoder, output, allocator_name)
    fault_in(_attach(name).buf)
    reserve(decoder, output, [largest])


def decode_into_shm(decoder: str, output: str, name: str, job: _Slot) -> tuple:
    """Decode one image into its slot of the shared segment; return its shape."""
    dest = np.ndarray(job.shape, np.uint8, buffer=_attach(name).buf, offset=job.offset)
    DECODERS[decoder].decode_into(job.path, output, dest)
    return job.shape


# --------------------------------------------------------------------------- runners


class SharedMemoryRunner(Runner):
    """A process pool whose workers write into one shared-memory segment the parent maps.

    The segment (one slot per image: the sum of every image's output size) is created and
    faulted in before the clock, in the parent and in each worker (``init_shm_worker``); it is
    unlinked on every exit path (``close`` runs in the trial's ``finally``: success, a decode
    error, a killed worker, Ctrl-C, SIGTERM) and unmapped once the results were checked.
    """

    def __init__(self, workers: int, p: dict, jobs: list[base.Job]):
        self.concurrency = workers
        self.offsets, total = [], 0
        for job in jobs:
            self.offsets.append(total)
            total += int(np.prod(job.shape))
        self.shm = shared_memory.SharedMemory(create=True, size=max(total, 1))
        self._unlinked = False
        decoder, output = p["decoder"], p["output"]
        try:
            fault_in(self.shm.buf)
            largest = max((j.shape for j in jobs), key=np.prod, default=(0, 0, 3))
            args = (decoder, output, p["allocator"], self.shm.name, largest)
            self.pool = process_pool(workers, init_shm_worker, args)
        except BaseException:
            self.close()
            raise
        self.fn = functools.partial(decode_into_shm, decoder, output, self.shm.name)

    def run(self, jobs):
        tasks = [
            _Slot(j.path, j.index, j.shape, o) for j, o in zip(jobs, self.offsets, strict=True)
        ]
        try:
            shapes = list(self.pool.map(self.fn, tasks))
        except BrokenProcessPool as exc:
            raise named_death(self.pool, exc) from exc
        return {
            t.path: np.ndarray(s, np.uint8, buffer=self.shm.buf, offset=t.offset)
            for t, s in zip(tasks, shapes, strict=True)
        }

    def close(self):
        try:
            if getattr(self, "pool", None) is not None:
                shutdown_pool(self.pool)
        finally:
            if not self._unlinked:
                self._unlinked = True
                self.shm.unlink()

    def release(self):
        self.shm.close()


# Every start warms the decoder up (imports, first-call set-up) where the work will run: in
# this process for sequential and threads, in each worker for the process pools. It is part
# of startup_seconds, never of the timed run.


def _start_sequential(ctx):
    p = ctx.params
    warm_up(p["decoder"], p["output"], p["allocator"])
    return Sequential(functools.partial(decode_job, p["decoder"], p["output"], p["delivery"]))


def _start_threads(ctx):
    p, workers = ctx.params, ctx.workers
    warm_up(p["decoder"], p["output"], p["allocator"])
    fn = functools.partial(decode_job, p["decoder"], p["output"], p["delivery"])
    return Pooled(thread_pool(workers), fn, workers)


def _start_processes(ctx):
    p, workers = ctx.params, ctx.workers
    allocator.apply(p["allocator"])  # the parent too: it unpickles the arrays delivered
    fn = functools.partial(decode_job, p["decoder"], p["output"], p["delivery"])
    pool = process_pool(workers, warm_up, (p["decoder"], p["output"], p["allocator"]))
    return Pooled(pool, fn, workers)


def _start_shm(ctx):
    allocator.apply(ctx.params["allocator"])
    return SharedMemoryRunner(ctx.workers, ctx.params, list(ctx.jobs))


# --------------------------------------------------------------------------- memory and checks


def mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- the phase


class DecodePhase(base.Phase):
    name = "decode"
    description = "decode to RGB (full size or the 224 crop) from a warm page cache"
    cache_state = "warm"
    job_keys = ("output", "delivery")
    rate = ("megapixels_per_s", "megapixels/s")  # comparable across decoders and sizes
    tables = (
        base.Table(
            "decode_table.md",
            "imgread.phases.decode.tables:decode_table",
            title="Decode: sequential vs processes (mean of repetitions)",
        ),
        base.Table(
            "decode_pipeline.md",
            "imgread.phases.decode.tables:pipeline_table",
            title=(
                "Decode like a real pipeline: decoder x output x delivery (median of repetitions)"
            ),
            note=(
                "megapixels/s counts the source image's pixels; speedup is over the same decoder, "
                "output and delivery decoded sequentially; ceiling_fraction = rate / (the same "
                "decoder and output's sequential rate with the pixels discarded x min(workers, "
                "physical cores)): what the cores allow, so the cost of handing the pixels over "
                "shows."
            ),
        ),
    )
    bench = (  # imgread.phases.decode.bench
        "imgread.phases.decode.bench:bench_speedup",
        "imgread.phases.decode.bench:bench_deliveries",
        "imgread.phases.decode.bench:bench_shm_delivery",
        "imgread.phases.decode.bench:bench_allocators",
    )
    figures = {
        "decode_speedup": "imgread.phases.decode.figures:decode_speedup",
        "decode_efficiency": "imgread.phases.decode.figures:decode_efficiency",
        "throughput": "imgread.phases.decode.figures:throughput",
        "published_comparison": "imgread.phases.decode.figures:published_comparison",
        "decode_cost": "imgread.phases.decode.figures:decode_cost",
        "memory_decode": "imgread.answer.figures.memory:memory_vs_workers",
        "decode_encodings": "imgread.phases.decode.figures:decode_encodings",
    }
    params = (
        base.Param("decoder", "pillow", tuple(DECODERS), "decoder of imgread.decoders"),
        base.Param("output", "full", OUTPUTS, "full: as decoded; crop224: resize 256 + crop"),
        base.Param("delivery", "discard", DELIVERIES, "discard: pixel count only; pixels: arrays"),
        base.Param(
            "allocator",
            "default",
            allocator.ALLOCATORS,
            "default: as the libraries set it; tuned: buffers kept for the next image",
        ),
    )
    variants = {
        v.name: v
        for v in (
            base.Variant(
                "sequential",
                False,
                _start_sequential,
                "decode each file one after another (the study's baseline)",
            ),
            base.Variant(
                "processes",
                True,
                _start_processes,
                "ProcessPoolExecutor(workers).map by path; pixels come back pickled "
                "through the pool's pipe (the study's parallel decoder)",
            ),
            base.Variant(
                "threads",
                True,
                _start_threads,
                "ThreadPoolExecutor(workers): the decoders release the GIL while decoding",
            ),
            base.Variant(
                "processes-shm",
                True,
                _start_shm,
                "process pool whose workers write the pixels into shared memory the parent "
                "maps (no pixels through a pipe)",
                allowed={"delivery": ("pixels",)},
            ),
        )
    }

    def reference(self, params):
        return (params["decoder"], params["output"]) if params["delivery"] == "pixels" else None

    def redundant(self, variant, params):
        # pillow-draft only differs from pillow when the output is resized.
        if params["decoder"] == "pillow-draft" and params["output"] == "full":
            return True
        return super().redundant(variant, params)

    def jobs(self, ctx):
        output = ctx.params["output"]
        return [
            base.Job(str(ctx.root / e.path), i, output_shape(e.width, e.height, output))
            for i, e in enumerate(ctx.entries)
        ]

    def check(self, ctx):
        jobs, workers, variant, params = ctx.jobs, ctx.workers, ctx.variant, ctx.params
        if params["delivery"] != "pixels":
            return
        needed = sum(int(np.prod(j.shape)) for j in jobs)
        if variant == "processes":  # a pickled copy of up to one image per worker in flight
            needed += 2 * workers * max(int(np.prod(j.shape)) for j in jobs)
        available = mem_available_bytes()
        if available is not None and needed > MEMORY_HEADROOM * available:
            raise UserError(
                f"decode n={len(jobs)} output={params['output']} delivery=pixels needs "
                f"{needed / 1e9:.2f} GB for the decoded arrays, but only "
                f"{available / 1e9:.2f} GB of memory is available (at most "
                f"{MEMORY_HEADROOM:.0%} may be used); use a smaller n, output crop224, "
                "or delivery discard"
            )

    def verify(self, ctx, results):
        root, entries, params = ctx.root, ctx.entries, ctx.params
        expected = base.expect_paths(self.name, results, root, entries)
        nbytes = sum(e.bytes for e in entries)
        pixels = sum(e.pixels for e in entries)
        out_pixels = 0
        extra = {"checksums_checked": 0, "verify_seconds": 0.0}
        if params["delivery"] == "discard":
            for path, count in results.items():
                h, w, _ = output_shape(
                    expected[path].width, expected[path].height, params["output"]
                )
                if count != h * w:
                    raise VerificationError(f"decode: {path} gave {count} pixels, expected {w}x{h}")
                out_pixels += count
            return base.Verified(
                len(results), nbytes, pixels, dict(extra, output_pixels=out_pixels)
            )
        t0 = time.perf_counter()
        reference = ctx.reference
        if reference is None:
            ref = reference_checksums(root, entries, params["decoder"], params["output"])
        else:
            ref = read_reference(reference, root, params["decoder"], params["output"])
        for path, rgb in results.items():
            e = expected[path]
            shape = output_shape(e.width, e.height, params["output"])
            if not isinstance(rgb, np.ndarray) or rgb.shape != shape or rgb.dtype != np.uint8:
                got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb)
                raise VerificationError(f"decode: {path} delivered {got}, expected uint8 {shape}")
            if path not in ref:
                raise VerificationError(f"decode: {path} is not in the reference {reference}")
            if ref[path] != (shape, checksum(rgb)):
                raise VerificationError(
                    f"decode: {path} delivered pixels whose checksum differs from the "
                    f"sequential {params['decoder']}/{params['output']} decode"
                )
            out_pixels += rgb.shape[0] * rgb.shape[1]
        extra.update(
            checksums_checked=len(results),
            verify_seconds=time.perf_counter() - t0,
            output_pixels=out_pixels,
        )
        return base.Verified(len(results), nbytes, pixels, extra)

    def ceiling_params(self, params):
        # The decoder's own rate: decoding alone, no pixels to hand over.
        return dict(params, delivery="discard")

    def record_fields(self, params):
        return dict(
            params,
            decoder_version=get_decoder(params["decoder"]).version(),
            allocator_settings=allocator.settings(),  # what the trial's own process had
        )
