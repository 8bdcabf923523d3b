"""The ``dali-cpu`` row's code to paste (imgread.phases.dataloader.snippet): NVIDIA DALI's
CPU-only pipeline (``device_id=None``, ``num_threads`` = the workers): ``fn.readers.file`` (or
``fn.external_source`` of an object store's bytes) -> ``fn.decoders.image(device="cpu")`` ->
``fn.resize(resize_shorter=256)`` -> ``fn.crop_mirror_normalize`` to float32 CHW 224 crops,
the crop anchored where the reference's centre crop is (imgread.phases.dataloader.pipelines.
dali_cpu)."""

from __future__ import annotations

from imgread.answer.snippet_parts import reader

DALI = '''

def crop_pos(spare):
    """The anchor DALI turns into floor(spare / 2), the reference's centre crop."""
    return fn.cast(spare // 2, dtype=types.FLOAT) / fn.cast(dmath.max(spare, 1), dtype=types.FLOAT)


@pipeline_def(
    batch_size=BATCH_SIZE, num_threads=max(WORKERS, 1), device_id=None, prefetch_queue_depth=2
)
def graph():
    encoded, key = SOURCE
    images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
    images = fn.resize(images, resize_shorter=256, interp_type=types.INTERP_LINEAR, antialias=True)
    shape = fn.cast(images.shape(), dtype=types.INT32)
    images = fn.crop_mirror_normalize(
        images,
        crop=(224, 224),
        crop_pos_x=crop_pos(shape[1] - 224),
        crop_pos_y=crop_pos(shape[0] - 224),
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        output_layout="CHW",
        dtype=types.FLOAT,
    )
    return images, key
'''
DALI_FILES = (
    "fn.readers.file(files=FILES, labels=list(range(len(FILES))), dont_use_mmap=True, "
    'pad_last_batch=True, random_shuffle=False, name="reader")'
)
DALI_REMOTE = '''

def batches_of_bytes():
    """The objects' bytes, a batch at a time (fn.external_source)."""
    for i in range(0, len(FILES), BATCH_SIZE):
        chunk = range(i, min(i + BATCH_SIZE, len(FILES)))
        yield [np.frombuffer(read(FILES[k]), np.uint8) for k in chunk], [np.int32(k) for k in chunk]
'''


def dali(p: dict):
    """(imports, body, tail) of the dali-cpu row: the pipeline as measured."""
    rimports, read = reader(p["remote"], p.get("client", "imgread"))
    source = DALI_FILES
    body = DALI
    if p["remote"]:
        source = (
            "fn.external_source(source=batches_of_bytes, num_outputs=2, batch=True, "
            "dtype=[types.UINT8, types.INT32])"
        )
        body = read + DALI_REMOTE + body
    tail = """
pipe = graph()
pipe.build()
batches = []
for _ in range(-(-len(FILES) // BATCH_SIZE)):
    out, _keys = pipe.run()
    batches.append(np.stack([np.array(out[j]) for j in range(len(out))]))
images = np.concatenate(batches)[: len(FILES)]  # the last batch is padded
"""
    imports = ["import numpy as np", "import nvidia.dali.math as dmath"]
    imports += ["from nvidia.dali import fn, pipeline_def, types", *rimports]
    return imports, body.replace("SOURCE", source), tail
