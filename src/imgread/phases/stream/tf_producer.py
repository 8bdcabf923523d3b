"""The stream's ``tf-data`` producer: frames decoded by a ``tf.data`` pipeline, as a
TensorFlow user streaming predictions would load them (seed 001).

A Python generator releases frame i into the pipeline once it has arrived and fewer than
``prefetch`` frames are produced ahead of the consumer (``tf.data.Dataset.from_generator``);
``.map(read_decode_crop, num_parallel_calls=AUTOTUNE)`` reads it (``tf.io.read_file``, or the
project's opener through ``tf.py_function`` on other storage), decodes it with TensorFlow's
``tf.io.decode_jpeg``, resizes the shorter side to 256 (``tf.image.resize(method="area")``)
and crops 224 (uint8, the stream's frame); ``.prefetch(prefetch)`` holds them for the
consumer, which runs the emulated model on each in arrival order (the stream's own loop,
imgread.phases.stream.producers.StreamRunner). ``workers`` sizes the dataset's private thread
pool and TensorFlow's op pools. A frame's ``start`` is when the generator released it.

TensorFlow decodes and resizes with code of its own, so the frames are checked against the
``decoder`` key's crop within a tolerance (:func:`check_frames`), not bit for bit.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time

import numpy as np

from imgread.decoders import CROP, DECODERS
from imgread.decoders.base import RESIZE_SHORTER
from imgread.errors import VerificationError
from imgread.phases.stream.producers import StreamRunner, _wait_until

NAME = "tf-data"
# Levels of 0-255 a frame may differ from the decoder's crop by, on average: the DataLoader
# peers' limit (imgread.phases.dataloader.pipelines.check.MAE_LIMIT); TensorFlow's own decode
# and area resize stay near 1.5 (docs/pipelines/tf-data.md).
MAE_LIMIT = 6.0


def missing() -> str | None:
    """Why the producer cannot run here (TensorFlow not installed), found without importing."""
    if importlib.util.find_spec("tensorflow") is None:
        return "tensorflow not installed (pip install tensorflow-cpu)"
    return None


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def crop224(tf, data):
    """The stream's frame from a JPEG's bytes in TensorFlow ops: decode_jpeg, the shorter side
    to 256 (area; the target from the file's size, rounded as the project's reference rounds),
    centre crop 224, rounded to uint8."""
    image = tf.io.decode_jpeg(data, channels=3)
    shape = tf.cast(tf.shape(image), tf.float64)
    h, w = shape[0], shape[1]
    scale = RESIZE_SHORTER / tf.minimum(h, w)
    least = tf.constant(RESIZE_SHORTER, tf.float64)
    tw = tf.cast(tf.maximum(least, tf.round(w * scale)), tf.int32)
    th = tf.cast(tf.maximum(least, tf.round(h * scale)), tf.int32)
    image = tf.image.resize(image, tf.stack([th, tw]), method="area")
    top, left = (th - CROP) // 2, (tw - CROP) // 2
    image = image[top : top + CROP, left : left + CROP, :]
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (CROP, CROP, 3))


class TfDataStream(StreamRunner):
    """Frames from a tf.data pipeline (AUTOTUNE map, prefetch) into the stream's consumer;
    warmed up by a short stream of the first frames before the clock."""

    def __init__(self, workers: int, p: dict, opener=None, jobs=()):
        super().__init__(workers, p, opener)
        tf = self.tf = _tensorflow()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(workers)
            tf.config.threading.set_inter_op_parallelism_threads(workers)
            self.op_threads_preset = False
        except RuntimeError:  # the runtime has started (a second trial in one process)
            self.op_threads_preset = True
        self.reader = opener.read if opener is not None and not opener.local_files else None
        self.jobs, self.clock, self.starts = (), None, []
        self.stopping = threading.Event()
        self.dataset = self._dataset()
        self.it = None
        warm = list(jobs[: max(1, min(len(jobs), self.prefetch))])
        if warm:
            self.run(warm)  # the map traced and run, the threads started, the model warmed

    def _frames(self):
        """The generator: (i, path) of each frame once it has arrived and there is room."""
        for i, job in enumerate(self.jobs):
            while not self.room.acquire(timeout=0.1):
                if self.stopping.is_set():
                    return
            _wait_until(self.clock.arrival[i])
            if self.stopping.is_set():
                return
            self.starts[i] = time.perf_counter()
            yield i, job.path

    def _dataset(self):
        tf = self.tf
        signature = (tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.string))
        reader = self.reader

        def fetch(p):
            return tf.constant(reader(p.numpy().decode()))

        def read_decode_crop(i, path):
            if reader is None:
                data = tf.io.read_file(path)
            else:
                data = tf.ensure_shape(tf.py_function(fetch, [path], tf.string), ())
            return i, crop224(tf, data)

        ds = tf.data.Dataset.from_generator(self._frames, output_signature=signature)
        ds = ds.map(read_decode_crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.prefetch(self.prefetch)
        options = tf.data.Options()
        options.threading.private_threadpool_size = self.concurrency
        options.threading.max_intra_op_parallelism = 1
        return ds.with_options(options)

    def start_stream(self, jobs, clock):
        self.jobs, self.clock, self.starts = list(jobs), clock, [0.0] * len(jobs)
        self.room = threading.Semaphore(self.prefetch)
        self.stopping.clear()
        self.it = iter(self.dataset)  # a fresh iterator: the generator starts anew

    def get(self, i):
        key, frame = next(self.it)
        if int(key) != i:  # deterministic=True keeps the order; say so if it did not
            raise VerificationError(f"stream/{NAME}: frame {int(key)} came where {i} was due")
        return frame.numpy(), self.starts[i]

    def consumed(self, i):
        self.room.release()

    def stop_stream(self):
        self.stopping.set()
        self.it = None  # the iterator's threads are cancelled once it is gone

    def fields(self) -> dict:
        tf = self.tf
        return {
            "tf": tf.__version__,
            "pipeline_decoder": "tf.io.decode_jpeg + tf.image.resize(method='area')",
            "num_parallel_calls": "AUTOTUNE",
            "tf_prefetch": self.prefetch,
            "private_threadpool_size": self.concurrency,
            "max_intra_op_parallelism": 1,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf_op_threads_preset": self.op_threads_preset,
        }

    def close(self):
        self.it = self.dataset = None


def start(ctx) -> TfDataStream:
    """The variant's start: the producer over the trial's jobs (the first warm it up)."""
    return TfDataStream(ctx.workers, ctx.params, ctx.opener, ctx.jobs)


def check_frames(decoder: str, paths: list[str], frames: list) -> dict:
    """Each frame within :data:`MAE_LIMIT` levels of ``decoder``'s crop of its file
    (VerificationError naming the frame otherwise); the largest and mean errors."""
    errors = np.zeros(len(frames))
    for i, (path, frame) in enumerate(zip(paths, frames, strict=True)):
        ref = DECODERS[decoder].decode(path, "crop224").astype(np.float32)
        if np.shape(frame) != ref.shape:
            raise VerificationError(f"stream: frame {i} ({path}) is {np.shape(frame)}")
        errors[i] = float(np.abs(np.asarray(frame, np.float32) - ref).mean())
        if errors[i] > MAE_LIMIT:
            raise VerificationError(
                f"stream: frame {i} ({path}) differs from the {decoder} crop by "
                f"{errors[i]:.1f} levels on average (limit {MAE_LIMIT})"
            )
    return {
        "checksums_checked": 0,
        "pixel_mae_max": float(errors.max()) if len(errors) else 0.0,
        "pixel_mae_mean": float(errors.mean()) if len(errors) else 0.0,
        "pixel_mae_limit": MAE_LIMIT,
    }
