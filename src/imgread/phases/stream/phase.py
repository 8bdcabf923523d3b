"""Phase ``stream``: frames arrive at ``fps`` and a "model" consumes each, in arrival order.

Frames are the dataset's images in manifest order; frame i arrives at ``i / fps`` after the
start (``fps`` 0: all at once, the throughput case; ``streams`` N: N phase-aligned cameras,
docs/stream.md) and cannot be read before it arrives. A
producer reads and decodes frames (the decoder's 224 crop) with at most ``prefetch`` frames
produced ahead of the consumer; the consumer runs the model on each for ``compute_ms``:
``sleep`` (an accelerator: no CPU, the GIL released) or ``cpu`` (numpy work holding a core).
Producers: ``sequential`` (inline, the baseline), ``processes`` (``multiprocessing.Pool``
``apply_async``, as in the seed), ``threads`` (a bounded pool feeding a ``queue.Queue``),
``thread-per-frame`` (the seed's one thread per frame, joined at the end, bounded by
``prefetch`` threads alive), ``asyncio`` (``aiofiles`` read and ``asyncio.to_thread`` decode
and model, as in the seed); they live in :mod:`imgread.phases.stream.producers`. ``tf-data``
(:mod:`imgread.phases.stream.tf_producer`, seed 001): a tf.data pipeline decodes the frames
with TensorFlow's own ops, checked within a tolerance instead of bit for bit.

Per frame: arrival, start (reading begins), ready (reaches the consumer), done (model done);
from them latency (arrival to done) percentiles without the first frames (the pipeline fill),
achieved fps, deadline misses (done after arrival + deadline) and the consumer's utilisation
AU = compute time / wall time (DLIO's accelerator utilisation).
"""

from __future__ import annotations

import time

import numpy as np

from imgread.decoders import DECODERS, checksum
from imgread.decoders.reference import read_reference, reference_checksums
from imgread.errors import VerificationError
from imgread.phases import base
from imgread.phases.stream import tf_producer
from imgread.phases.stream.producers import (
    COMPUTE_KINDS,
    AsyncioStream,
    ProcessesStream,
    SequentialStream,
    ThreadPerFrameStream,
    ThreadsStream,
)
from imgread.trial.search import Outcome, SearchKey

LATE_LIMIT = 0.01  # a stream is sustained with under 1 % of its frames late


def frame_metrics(times, fps: int, deadline_ms: int, compute_s: float, warmup: int) -> dict:
    """Latency percentiles (after ``warmup`` frames), achieved fps, deadline misses and AU."""
    t = np.asarray(times, dtype=float)  # arrival, start, ready, done (seconds from t0)
    latency = (t[:, 3] - t[:, 0]) * 1e3
    steady = latency[warmup:] if len(latency) > warmup else latency
    wall = t[-1, 3]  # from the first arrival (t0) to the last frame done
    deadline = deadline_ms if deadline_ms else (1e3 / fps if fps else None)
    misses = int((latency > deadline).sum()) if deadline else -1
    return {
        "latency_p50_ms": float(np.percentile(steady, 50)),
        "latency_p95_ms": float(np.percentile(steady, 95)),
        "latency_p99_ms": float(np.percentile(steady, 99)),
        "latency_max_ms": float(steady.max()),
        "service_ms": float(np.median((t[:, 3] - t[:, 1]) * 1e3)),
        "achieved_fps": len(t) / wall,
        "deadline_effective_ms": float(deadline) if deadline else float("nan"),
        "deadline_misses": misses,
        "deadline_miss_fraction": misses / len(t) if deadline else float("nan"),
        "compute_seconds": compute_s * len(t),
        "au": compute_s * len(t) / wall,
        "warmup_frames": warmup,
    }


def sustained(record: dict) -> Outcome:
    """Whether a trial's streams were sustained: p99 latency within the deadline and under
    :data:`LATE_LIMIT` of the frames late (metric: the p99 in ms). Never at fps 0 (no
    deadline)."""
    p99, deadline = record.get("latency_p99_ms"), record.get("deadline_effective_ms")
    late = record.get("deadline_miss_fraction")
    measured = all(isinstance(x, int | float) and x == x for x in (p99, deadline, late))
    ok = measured and p99 <= deadline and late < LATE_LIMIT
    keep = ("streams", "fps", "latency_p99_ms", "deadline_effective_ms", "deadline_miss_fraction")
    summary = {k: record.get(k) for k in (*keep, "achieved_fps", "au")}
    return Outcome(bool(ok), float(p99) if measured else float("nan"), summary)


STREAMS = SearchKey(
    "streams",
    1,
    # the first probe is one stream; once it passes, from two, doubling until a count fails,
    # then halving (imgread.trial.search_run measures a value once)
    lambda first: (2, None),
    sustained,
    integer=True,
    describe="the most streams at fps with p99 latency within the deadline and < 1 % late",
    metric="p99 ms",
)


def _starts(producer):
    """A variant's start: the producer, reading through the trial's storage (imgread.storage)."""
    return lambda ctx: producer(ctx.workers, ctx.params, ctx.opener)


class StreamPhase(base.Phase):
    name = "stream"
    description = "stream frames at fps into an emulated model; latency, deadlines, AU"
    search_keys = {"streams": STREAMS}
    job_keys = ("fps", "streams", "compute_ms", "compute", "deadline_ms", "page_cache", "storage")
    tables = (
        base.Table(
            "stream_producers.csv", "imgread.phases.stream.tables:stream_producers", caption=True
        ),
    )
    figures = {
        "stream_latency_cdf": "imgread.phases.stream.figures:stream_latency_cdf",
        "stream_p99": "imgread.phases.stream.figures:stream_p99",
        "stream_au": "imgread.phases.stream.figures:stream_au",
        "memory_stream": "imgread.answer.figures.memory:memory_vs_workers",
        "storage_stream": "imgread.answer.figures.storage:by_storage",
    }

    def objective(self, job):
        # All frames at once: frames per second through the model; at a rate every producer
        # keeps up or falls behind, and what tells them apart is the 99th percentile latency.
        if str(job.get("fps", "0")) == "0":
            return "images_per_s", True, "frames/s"
        return "latency_p99_ms", False, "ms p99 latency"

    def ceiling_kind(self, params):
        # All at once, a model of compute_ms bounds the frames/s: the fraction of it reached
        # is the AU. At a rate the frames/s are the offered rate, and with no model, threads
        # and thread-per-frame overlap waits, so no per-core ceiling bounds the rate.
        at_once = str(params.get("fps", "0")) == "0"
        return "model" if at_once and str(params.get("compute_ms", "0")) != "0" else "none"

    params = (
        base.Param("decoder", "opencv", tuple(DECODERS), "decoder of imgread.decoders"),
        base.Param("fps", "0", None, "frames per second offered (0: all at once)", 0),
        base.Param("compute_ms", "0", None, "the model's time per frame", 0),
        base.Param("compute", "sleep", COMPUTE_KINDS, "sleep (accelerator) or cpu (a core)"),
        base.Param("prefetch", "4", None, "frames produced ahead of the consumer, per stream"),
        base.Param("page_cache", "warm", ("cold", "warm"), "page-cache state at the start"),
        base.Param("deadline_ms", "0", None, "a frame is late after arrival + this (0: 1/fps)", 0),
        # Added with the streams search (issue 28): at 1 the trial paths stay as they were.
        base.Param(
            "streams",
            "1",
            None,
            "concurrent phase-aligned sources at fps each (sizes: all streams' frames)",
            later=True,
        ),
        base.STORAGE,
    )
    variants = {
        v.name: v
        for v in (
            base.Variant(
                "sequential",
                False,
                _starts(SequentialStream),
                "read, decode and compute inline (the baseline)",
            ),
            base.Variant(
                "processes",
                True,
                _starts(ProcessesStream),
                "multiprocessing.Pool(workers).apply_async per frame (seed recipe 1)",
            ),
            base.Variant(
                "threads",
                True,
                _starts(ThreadsStream),
                "a bounded thread pool feeding a queue.Queue",
            ),
            base.Variant(
                "thread-per-frame",
                False,
                _starts(ThreadPerFrameStream),
                "one thread per frame, joined at the end (seed recipe 2), at most "
                "prefetch threads alive",
            ),
            base.Variant(
                "asyncio",
                True,
                _starts(AsyncioStream),
                "aiofiles + asyncio.to_thread (seed recipe 3), workers threads",
            ),
            base.Variant(
                tf_producer.NAME,
                True,
                tf_producer.start,
                "tf.data from_generator + map(decode_jpeg, AUTOTUNE) + prefetch, workers "
                "threads (seed 001's TensorFlow)",
                # checked against a full-size decode: simplejpeg's crop224 picks a DCT scale
                # (8 levels off on 500 x 375), pillow's is opencv's to the bit
                {"decoder": ("opencv",)},
            ),
        )
    }

    def missing(self, variant):
        return tf_producer.missing() if variant == tf_producer.NAME else None

    def reference(self, params):
        return params["decoder"], "crop224"

    def page_cache(self, params):
        return params["page_cache"]

    def redundant(self, variant, params):
        # With no compute the kind of compute does not matter.
        if params["compute_ms"] == "0" and params["compute"] != "sleep":
            return True
        # All at once, N streams are the same frames at once as one.
        if params["fps"] == "0" and params.get("streams", "1") != "1":
            return True
        return super().redundant(variant, params)

    def verify(self, ctx, results):
        root, entries, params = ctx.root, ctx.entries, ctx.params
        n = len(entries)
        t0 = time.perf_counter()
        frames, times, paths = results["frames"], results["times"], results["paths"]
        expected = [str(root / e.path) for e in entries]
        if paths != expected or len(frames) != n or len(times) != n:
            raise VerificationError(f"stream: {len(frames)} frames consumed, expected {n}")
        if ctx.variant == tf_producer.NAME:  # TensorFlow's own decode: within a tolerance
            pixels = tf_producer.check_frames(params["decoder"], paths, frames)
        else:
            pixels = {"checksums_checked": n}
            self._check_checksums(ctx, paths, frames)
        t = np.asarray(times)
        if (np.diff(t[:, 3]) < 0).any():
            raise VerificationError("stream: frames were not consumed in order")
        if (t[:, 1] < t[:, 0] - 1e-4).any():
            raise VerificationError("stream: a frame was read before it arrived")
        streams = int(params.get("streams", 1))
        warmup = min(n // 5, (int(params["prefetch"]) + 4) * streams)  # the fill, in ticks
        metrics = frame_metrics(
            times,
            int(params["fps"]),
            int(params["deadline_ms"]),
            int(params["compute_ms"]) / 1e3,
            warmup,
        )
        return base.Verified(
            n,
            sum(e.bytes for e in entries),
            sum(e.pixels for e in entries),
            {
                **metrics,
                **pixels,
                "verify_seconds": time.perf_counter() - t0,
                "output_pixels": n * 224 * 224,
                "frames": [[round(x, 6) for x in row] for row in times],
            },
        )

    @staticmethod
    def _check_checksums(ctx, paths, frames) -> None:
        decoder, reference = ctx.params["decoder"], ctx.reference
        ref = (
            read_reference(reference, ctx.root, decoder, "crop224")
            if reference
            else reference_checksums(ctx.root, ctx.entries, decoder, "crop224")
        )
        for i, (path, frame) in enumerate(zip(paths, frames, strict=True)):
            if ref[path] != (frame.shape, checksum(frame)):
                raise VerificationError(
                    f"stream: frame {i} ({path}) differs from the sequential {decoder} decode"
                )

    def record_fields(self, params):
        return dict(params, decoder_version=DECODERS[params["decoder"]].version())
