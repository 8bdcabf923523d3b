"""The ``tf-data`` pipeline: a ``tf.data`` input pipeline as TensorFlow users write one.

``tf.data.Dataset.from_tensor_slices((paths, labels, keys))``, then one
``.map(read_and_transform, num_parallel_calls=...)``: the file's bytes (``tf.io.read_file``;
on an http profile the project's opener, called through ``tf.py_function``), TensorFlow's own
decode (``tf.io.decode_jpeg(channels=3)``, at the DCT ``ratio`` where the image is large
enough), the shorter side resized to 256 (``tf.image.resize(method="area")``, TensorFlow's
box filter, the nearest to the project's INTER_AREA), a centre crop of 224 and the seed's
normalisation; ``.batch(batch_size)``, ``.prefetch(AUTOTUNE)``, and no ``.cache()``. Samples
are NHWC float32. The key (the manifest position) travels beside the image through the map.

Knobs: ``workers`` is ``num_parallel_calls`` (0: ``tf.data.AUTOTUNE``), with the dataset's
private thread pool and TensorFlow's op pools sized to the cores it may use; ``ratio`` is
``decode_jpeg``'s DCT scaling (1, 2, 4, 8), applied to an image only where its shorter side /
ratio still covers 256 (others decode at ratio 1, counted in ``ratio_fallbacks``).

This module imports TensorFlow only when a trial starts (its first import, before anything
could import torch in the trial's process: docs/pipelines/tf-data.md).
"""

from __future__ import annotations

import os
import time

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP
from imgread.decoders.base import RESIZE_SHORTER
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.consumer import Consumer, batch_len
from imgread.trial.pools import Runner

RATIOS = ("1", "2", "4", "8")
RESIZE_METHOD = "area"
# Batches of the warm-up epoch: the map's function traced and run, the pool's threads started.
WARMUP_BATCHES = 2


def tensorflow():
    """TensorFlow, imported quietly (its C++ INFO lines off unless the user set the level)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def cores() -> int:
    """The cores this process may run on (its CPU affinity, a cgroup's cpuset included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_op_threads(tf, threads: int) -> dict:
    """TensorFlow's intra- and inter-op pools set to ``threads`` where they are not yet made
    (they are fixed once the runtime has started: a second trial in one process keeps the
    first's); the values in effect, for the record."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        fixed = False
    except RuntimeError:  # "cannot be modified after initialization"
        fixed = True
    return {
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "tf_op_threads_preset": fixed,
    }


def make_transform(tf, ratio: int):
    """The map's function from an image's bytes: (image NHWC float32 224 x 224 x 3, whether
    it fell back to ratio 1). The resize target comes from the file's own size (as the
    reference's), whatever the DCT ratio the decode took."""

    def transform(data):
        shape = tf.io.extract_jpeg_shape(data)
        h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
        short = tf.minimum(h, w)
        if ratio == 1:
            image, fell_back = tf.io.decode_jpeg(data, channels=3), tf.constant(False)
        else:
            scaled = short / ratio >= RESIZE_SHORTER
            image = tf.cond(
                scaled,
                lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio),
                lambda: tf.io.decode_jpeg(data, channels=3),
            )
            fell_back = tf.logical_not(scaled)
        scale = RESIZE_SHORTER / short  # Python's round() is half to even, as tf.round
        least = tf.constant(RESIZE_SHORTER, tf.float64)
        tw = tf.cast(tf.maximum(least, tf.round(w * scale)), tf.int32)
        th = tf.cast(tf.maximum(least, tf.round(h * scale)), tf.int32)
        image = tf.image.resize(image, tf.stack([th, tw]), method=RESIZE_METHOD)
        top, left = (th - CROP) // 2, (tw - CROP) // 2
        image = image[top : top + CROP, left : left + CROP, :]
        image = tf.ensure_shape((image / 255.0 - 0.5) / 0.5, (CROP, CROP, 3))
        return image, fell_back

    return transform


class TfDataRunner(Runner):
    """A tf.data pipeline over the trial's files, warmed up by a short epoch before the
    clock; the timed epoch is a fresh iterator over all n."""

    def __init__(self, ctx):
        tf = self.tf = tensorflow()
        params, n = ctx.params, len(ctx.jobs)
        self.batch = int(params["batch_size"])
        self.ratio = int(params.get("ratio", "1"))
        self.cores = cores()
        threads = ctx.workers or self.cores  # AUTOTUNE may use every core it is given
        self.threading = set_op_threads(tf, threads)
        self.calls = ctx.workers or tf.data.AUTOTUNE
        self.concurrency = threads
        self.private_threadpool_size = threads
        self.opener = ctx.opener if ctx.opener is not None and not ctx.opener.local_files else None
        self.paths = [j.path for j in ctx.jobs]
        self.labels = [int(y) for y in class_labels(ctx.manifest)[:n]]
        self.fallbacks = 0
        self.consumer = Consumer.of(params)  # the simulated accelerator (accel_rate)
        self.first_batch_seconds = self.iterator_seconds = float("nan")
        warm = self.dataset(range(min(n, self.batch * WARMUP_BATCHES)))
        self._epoch(warm)  # its own iterator, gone once it ends
        self.timed = self.dataset(range(n))

    def _read(self, path):
        """The bytes of ``path``: the file where it is, or the project's opener."""
        tf = self.tf
        if self.opener is None:
            return tf.io.read_file(path)
        read = self.opener.read

        def fetch(p):
            return tf.constant(read(p.numpy().decode()))

        data = tf.py_function(fetch, [path], tf.string)
        return tf.ensure_shape(data, ())

    def dataset(self, indices):
        """The pipeline over the jobs at ``indices``: (images, labels, keys, fell_back)."""
        tf = self.tf
        idx = list(indices)
        slices = (
            tf.constant([self.paths[i] for i in idx], tf.string),
            tf.constant([self.labels[i] for i in idx], tf.int64),
            tf.constant(idx, tf.int64),
        )
        transform = make_transform(tf, self.ratio)

        def read_and_transform(path, label, key):
            image, fell_back = transform(self._read(path))
            return image, label, key, fell_back

        ds = tf.data.Dataset.from_tensor_slices(slices)
        ds = ds.map(read_and_transform, num_parallel_calls=self.calls)
        ds = ds.batch(self.batch).prefetch(tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.threading.private_threadpool_size = self.private_threadpool_size
        options.threading.max_intra_op_parallelism = 1  # one image per thread, as a worker
        return ds.with_options(options)

    def _epoch(self, ds) -> list:
        out, fallbacks = [], 0
        t0 = time.perf_counter()
        it = iter(ds)
        t1 = time.perf_counter()
        for images, labels, keys, fell_back in self.consumer.feed(it, batch_len):
            # what a training step gets: numpy views of the tensors (no copy on CPU)
            out.append((images.numpy(), labels.numpy(), keys.numpy()))
            fallbacks += int(fell_back.numpy().sum())
            if len(out) == 1:
                self.first_batch_seconds = time.perf_counter() - t0
        self.iterator_seconds, self.fallbacks = t1 - t0, fallbacks
        return out

    def run(self, jobs):
        with self.consumer.epoch():
            return self._epoch(self.timed)

    def fields(self) -> dict:
        tf = self.tf
        return {
            "tf": tf.__version__,
            "pipeline_versions": PIPELINE.versions(),
            "pipeline_decoder": "tf.io.decode_jpeg (TensorFlow's libjpeg-turbo)",
            "pipeline_resize": f"tf.image.resize(method={RESIZE_METHOD!r})",
            "num_parallel_calls": "AUTOTUNE" if self.calls == tf.data.AUTOTUNE else self.calls,
            "ratio_fallbacks": self.fallbacks,
            "prefetch": "AUTOTUNE",
            "private_threadpool_size": self.private_threadpool_size,
            "max_intra_op_parallelism": 1,
            "cores": self.cores,
            **self.threading,
            "first_batch_seconds": self.first_batch_seconds,
            "iterator_seconds": self.iterator_seconds,
            "batches": -(-len(self.paths) // self.batch),
            **self.consumer.fields(),
        }

    def close(self):
        self.timed = None


PIPELINE = Pipeline(
    "tf-data",
    "tf.data from_tensor_slices + map(decode_jpeg, resize area, crop, normalise, "
    "num_parallel_calls=workers; 0: AUTOTUNE) + batch + prefetch",
    "imgread.phases.dataloader.pipelines.tf_data:TfDataRunner",
    imports=("tensorflow",),
    distributions=("tensorflow-cpu",),
    allowed={
        "decoder": ("pillow",),
        "source": ("jpeg",),
        "normalize": ("item",),
        "collate": ("fresh",),
        "allocator": ("default",),
        "pin_memory": ("false",),
        "shard_mb": ("0",),
        "ratio": RATIOS,
    },
    min_workers=0,
    layout="NHWC",
    reads="the trial's files (tf.io.read_file), or through the project's opener "
    "(tf.py_function) on other storage",
)


def fuzz_decode(path: str, output: str = "full"):
    """What this pipeline's map does to one file, for the fuzz run (imgread.decoders.fuzz):
    ``tf.io.decode_jpeg(channels=3)`` of its bytes, as H x W x 3 uint8."""
    import tensorflow as tf

    return tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
