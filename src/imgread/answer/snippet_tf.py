"""The ``tf.data`` snippets (imgread.answer.snippets): the DataLoader phase's ``tf-data`` chain
(``map(num_parallel_calls=workers or AUTOTUNE)``, ``batch``, ``prefetch(AUTOTUNE)``, the
dataset's private thread pool and TensorFlow's op pools sized to the workers) and the stream's
``tf.data`` producer; TensorFlow's own decode, area resize of the shorter side to 256 and
centre crop 224, as imgread.phases.dataloader.pipelines.tf_data measures it.
"""

from __future__ import annotations

from imgread.answer.snippet_parts import reader

TF_TRANSFORM = '''

def transform(path):
    """TensorFlow's decode (at the DCT ratio where it still covers 256), area resize of the
    shorter side to 256, centre crop 224."""
    data = READ
    shape = tf.io.extract_jpeg_shape(data)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    short = tf.minimum(h, w)
    if RATIO == 1:
        image = tf.io.decode_jpeg(data, channels=3)
    else:
        image = tf.cond(
            short / RATIO >= 256,
            lambda: tf.io.decode_jpeg(data, channels=3, ratio=RATIO),
            lambda: tf.io.decode_jpeg(data, channels=3),
        )
    scale = 256 / short
    tw = tf.cast(tf.maximum(tf.constant(256, tf.float64), tf.round(w * scale)), tf.int32)
    th = tf.cast(tf.maximum(tf.constant(256, tf.float64), tf.round(h * scale)), tf.int32)
    image = tf.image.resize(image, tf.stack([th, tw]), method="area")
    top, left = (th - 224) // 2, (tw - 224) // 2
    return FINISH
'''
TF_SETUP = """os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  (before torch, if both)

THREADS = WORKERS or os.cpu_count()
tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)
"""


def tf_parts(p: dict, finish: str):
    """(imports, source) of ``transform(path)``: the read and TensorFlow's decode, resize and
    crop, ``finish`` the expression it returns."""
    rimports, read = reader(p["remote"], p.get("client", "imgread"))
    get = "tf.io.read_file(path)"
    if p["remote"]:
        get = "tf.py_function(lambda q: read(q.numpy().decode()), [path], tf.string)"
        get = f"tf.ensure_shape({get}, ())"
    body = TF_TRANSFORM.replace("READ", get).replace("FINISH", finish)
    return ["import numpy as np", *rimports], (read if p["remote"] else "") + body
