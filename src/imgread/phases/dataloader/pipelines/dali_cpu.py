"""The ``dali-cpu`` pipeline: NVIDIA DALI's CPU-only pipeline (``device_id=None``: no GPU, no
CUDA driver), ``fn.readers.file`` (or, on a remote storage, ``fn.external_source`` fed by the
trial's opener) -> ``fn.decoders.image(device="cpu")`` -> ``fn.resize(resize_shorter=256)``
-> ``fn.crop_mirror_normalize`` to float32 CHW 224 crops with the seed's normalisation.

DALI runs in threads of the trial's own process (``num_threads`` = the cell's workers), no
worker processes. Each sample's key (its manifest position) is the reader's label (or the
external source's second output), carried by DALI beside the image; the class label is looked
up from the manifest by that key.

Before the clock: a warm-up pipeline of the same graph runs one short epoch (the first
``batch x num_threads`` images: the libraries loaded, the codec set up) and is destroyed; the
timed pipeline is built and not run. A warmed reader would not do: ``fn.readers.file`` reads
ahead of the pipeline on its own thread (strace: most of the next epoch's files were read
before the warm-up epoch returned), which would carry the timed epoch's bytes over the clock
and past the cold trial's eviction. The timed epoch schedules exactly ``ceil(n / batch)``
iterations (nothing of a next epoch is computed) and drops the last batch's padding: DALI's
reader pads (``pad_last_batch``) or wraps into the next epoch otherwise.
"""

from __future__ import annotations

import gc
import math
import time

import numpy as np

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP
from imgread.decoders.base import RESIZE_SHORTER
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.consumer import Consumer
from imgread.trial.pools import Runner

PREFETCH_QUEUE_DEPTH = 2  # DALI's default depth of the executor's queue (batches in flight)
READER_PREFETCH = 1  # fn.readers.file's own default (batches its loader thread reads ahead)
# The reader repeats the shard's last sample to fill the last batch, which the epoch then
# trims; False: the reader wraps into the next epoch (tests switch both off to show the check
# failing on what DALI yields by default)
PAD_LAST_BATCH = True
TRIM_LAST_BATCH = True
# Triangular (linear with antialias) is nearest to the reference's INTER_AREA: docs/pipelines
INTERP = "INTERP_LINEAR"
MEAN = STD = (127.5, 127.5, 127.5)  # (x - 127.5) / 127.5 = (x / 255 - 0.5) / 0.5


class _Remote:
    """``fn.external_source``'s batch callback: batch ``i`` of ``keys``, each file read through
    the trial's opener, its key beside it (the epoch schedules exactly its batches)."""

    def __init__(self, opener, paths: list[str], keys: list[int], batch: int):
        self.opener, self.paths, self.keys, self.batch = opener, paths, keys, batch

    def __call__(self, i: int):
        picked = self.keys[i * self.batch : (i + 1) * self.batch]
        if not picked:
            raise StopIteration
        data = [np.frombuffer(self.opener.read(self.paths[k]), dtype=np.uint8) for k in picked]
        return data, [np.array([k], dtype=np.int32) for k in picked]


def _crop_pos(extent):
    """DALI's crop anchor is ``round(pos * (extent - 224))`` (58.5 -> 59 for a 341 side); the
    reference's ``floor((extent - 224) / 2)``: the position that lands on it."""
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, types

    spare = extent - CROP
    return fn.cast(spare // 2, dtype=types.FLOAT) / fn.cast(dmath.max(spare, 1), dtype=types.FLOAT)


def _source(ctx, keys: list[int], batch: int):
    """(encoded, key) nodes: the file reader over the jobs' paths, or the opener's bytes."""
    from nvidia.dali import fn, types

    opener, paths = ctx.opener, [str(j.path) for j in ctx.jobs]
    if opener is None or opener.local_files:
        return fn.readers.file(
            files=[paths[k] for k in keys],
            labels=keys,
            dont_use_mmap=True,
            pad_last_batch=PAD_LAST_BATCH,
            prefetch_queue_depth=READER_PREFETCH,
            random_shuffle=False,
            name="reader",
        )
    return fn.external_source(
        source=_Remote(opener, paths, keys, batch),
        num_outputs=2,
        batch=True,
        parallel=False,
        dtype=[types.UINT8, types.INT32],
    )


def build(ctx, keys: list[int], threads: int, batch: int, depth: int):
    """A built (not run) DALI CPU pipeline over the manifest positions ``keys``."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, prefetch_queue_depth=depth)
    def graph():
        encoded, key = _source(ctx, keys, batch)
        images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
        images = fn.resize(
            images,
            resize_shorter=RESIZE_SHORTER,
            interp_type=getattr(types, INTERP),
            antialias=True,
        )
        shape = fn.cast(images.shape(), dtype=types.INT32)
        images = fn.crop_mirror_normalize(
            images,
            crop=(CROP, CROP),
            crop_pos_x=_crop_pos(shape[1]),
            crop_pos_y=_crop_pos(shape[0]),
            mean=list(MEAN),
            std=list(STD),
            output_layout="CHW",
            dtype=types.FLOAT,
        )
        return images, key

    pipe = graph()
    pipe.build()
    return pipe


def epoch(
    pipe, n: int, batch: int, labels: np.ndarray, depth: int, consumer=None
) -> tuple[list, float]:
    """The ``ceil(n / batch)`` batches of one epoch ``(images, labels, keys)``, copied out of
    DALI's buffers (as its framework iterators copy), the last one's padding dropped; and the
    time to the first batch. Exactly those iterations are scheduled: none runs ahead."""
    batches, out = math.ceil(n / batch), []
    t0 = time.perf_counter()
    first = float("nan")
    pipe.schedule_run()  # the first call queues ``depth`` iterations
    scheduled = depth
    for i in range(batches):
        images, keys = pipe.share_outputs()
        real = min(batch, n - i * batch) if TRIM_LAST_BATCH else len(keys)
        arr = images.as_array()[:real]
        ks = keys.as_array().reshape(-1)[:real].astype(np.int64)
        pipe.release_outputs()
        if scheduled < batches:
            pipe.schedule_run()
            scheduled += 1
        if not out:
            first = time.perf_counter() - t0
        out.append((arr, labels[ks], ks))
        if consumer is not None:  # the simulated accelerator's step (accel_rate)
            consumer.step(real)
    return out, first


def _status(field: str) -> int:
    """A count of this process's /proc status (kB fields as bytes); 0 where unreadable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[-1] == "kB" else 1)
    except OSError:
        pass
    return 0


def _codecs() -> str:
    """What decodes the JPEGs: nvImageCodec's CPU JPEG extension where this process has it
    loaded (nvImageCodec loads every extension; libjpeg-turbo's is first for JPEG on CPU)."""
    found = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if "nvimgcodec" in line and "_ext.so" in line:
                    found.add(line.rsplit("/", 1)[-1].strip())
    except OSError:
        pass
    turbo = sorted(x for x in found if x.startswith("libjpeg_turbo_ext"))
    return f"{turbo[0]} (opencv_ext its fallback)" if turbo else "no libjpeg_turbo_ext loaded"


class DaliRunner(Runner):
    """A DALI CPU pipeline, built before the clock after a short warm-up pipeline's epoch."""

    def __init__(self, ctx):
        import nvidia.dali as dali

        self.version = dali.__version__
        n, self.batch = len(ctx.jobs), int(ctx.params["batch_size"])
        self.threads = self.concurrency = max(int(ctx.workers), 1)
        self.labels = class_labels(ctx.manifest)[:n]
        self.local = ctx.opener is None or ctx.opener.local_files
        self.batches = math.ceil(n / self.batch)
        # a pipeline never queues more iterations than its epoch has (none would run ahead)
        self.depth = min(PREFETCH_QUEUE_DEPTH, self.batches)
        self.warm_up_samples = min(n, self.batch * self.threads)
        t0 = time.perf_counter()
        warm = build(ctx, list(range(self.warm_up_samples)), self.threads, self.batch, 1)
        epoch(warm, self.warm_up_samples, self.batch, self.labels, 1)
        del warm  # its threads joined: its reader reads nothing more
        gc.collect()
        t1 = time.perf_counter()
        self.pipe = build(ctx, list(range(n)), self.threads, self.batch, self.depth)
        self.warm_up_seconds, self.build_seconds = t1 - t0, time.perf_counter() - t1
        self.codecs = _codecs()
        self.first_batch_seconds = float("nan")
        self.consumer = Consumer.of(ctx.params)

    def run(self, jobs):
        with self.consumer.epoch():
            out, self.first_batch_seconds = epoch(
                self.pipe, len(jobs), self.batch, self.labels, self.depth, self.consumer
            )
        return out

    def fields(self) -> dict:
        pipe = self.pipe
        return {
            "pipeline_versions": PIPELINE.versions(),
            "dali_version": self.version,
            "num_threads": self.threads,
            "prefetch_queue_depth": self.depth,
            "reader_prefetch_queue_depth": READER_PREFETCH if self.local else 0,
            "exec_settings": f"exec_dynamic={pipe.exec_dynamic} exec_pipelined="
            f"{pipe.exec_pipelined} exec_async={pipe.exec_async}",
            "pipeline_reader": "fn.readers.file(dont_use_mmap=True, pad_last_batch="
            f"{PAD_LAST_BATCH}, no shuffle)"
            if self.local
            else "fn.external_source(batch callback of ctx.opener.read, parallel=False)",
            "pipeline_decoder": f"fn.decoders.image(device='cpu'): nvImageCodec {self.codecs}",
            "pipeline_resize": f"fn.resize(resize_shorter={RESIZE_SHORTER}, {INTERP}, "
            "antialias=True); crop anchor floor((side - 224) / 2)",
            "pipeline_cache": "none (dont_use_mmap; the decoder cache is the GPU decoder's)",
            "keys_from": "DALI: the reader's label (external_source's 2nd output) is the "
            "manifest position; class labels looked up from the manifest by it",
            "warm_up_samples": self.warm_up_samples,
            "warm_up_seconds": self.warm_up_seconds,
            "build_seconds": self.build_seconds,
            "first_batch_seconds": self.first_batch_seconds,
            "batches": self.batches,
            # DALI is threads in this one process: its whole peak resident set, and threads
            "peak_rss_process_bytes": _status("VmHWM"),
            "process_threads": _status("Threads"),
            **self.consumer.fields(),
        }

    def close(self):
        self.pipe = None
        gc.collect()  # the pipeline's threads end with it


PIPELINE = Pipeline(
    "dali-cpu",
    "NVIDIA DALI's CPU-only pipeline (num_threads=workers): readers.file or external_source "
    "-> decoders.image(cpu) -> resize -> crop_mirror_normalize",
    "imgread.phases.dataloader.pipelines.dali_cpu:DaliRunner",
    imports=("nvidia.dali",),
    distributions=("nvidia-dali-cuda120", "nvidia-nvimgcodec-cu12"),
    allowed={
        "decoder": ("pillow",),
        "source": ("jpeg",),
        "normalize": ("item",),
        "collate": ("fresh",),
        "allocator": ("default",),
        "pin_memory": ("false",),
    },
    min_workers=1,
    layout="NCHW",
    reads="the trial's files with fn.readers.file, or through the opener (external_source)",
)


_FUZZ_PIPE = None


def fuzz_decode(path: str, output: str = "full"):
    """What this pipeline's decoder does to one file, for the fuzz run (imgread.decoders.fuzz):
    ``fn.decoders.image(device="cpu")`` of its bytes, fed by ``external_source``, one
    pipeline built once per process (and again after a file it refused)."""
    global _FUZZ_PIPE
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    if _FUZZ_PIPE is None:

        @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
        def one():
            raw = fn.external_source(name="raw", dtype=types.UINT8, ndim=1)
            return fn.decoders.image(raw, device="cpu", output_type=types.RGB)

        _FUZZ_PIPE = one()
        _FUZZ_PIPE.build()
    with open(path, "rb") as fh:
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    try:
        _FUZZ_PIPE.feed_input("raw", [data])
        (out,) = _FUZZ_PIPE.run()
    except Exception:
        _FUZZ_PIPE = None  # a refusal may leave the pipeline unusable: the next file builds anew
        raise
    return np.array(out.as_array()[0])
