"""The decode phase's code to paste (imgread.answer.snippets): the images' bytes in memory,
decoded by the row's decoder (full or the 224 crop) one after another or in a thread or
process pool of ``workers``, or into one shared-memory block (``processes-shm``). It leaves
``images`` (delivery ``pixels``) or ``shapes`` (``discard``: the workers hand back nothing).
"""

from __future__ import annotations

from imgread.answer.snippet_parts import POOL_IMPORTS, POOL_RUN, code, parts


def snippet(variant: str, workers: int, p: dict, dataset: str) -> str:
    """The decode row's snippet: the bytes read first, then decoded by the pool."""
    crop = p.get("output", "full") == "crop224"
    imports, body, first, constants = parts(p, crop, max(workers, 1))
    constants["WORKERS"] = workers
    pixels = p.get("delivery", "discard") == "pixels"
    if not pixels:  # delivery=discard: the worker hands back nothing but the shape
        body += '\n\ndef work(data):\n    """Decode; only the shape comes back."""\n'
        body += "    return decode(data).shape\n"
    fn = "decode" if pixels else "work"
    if variant == "processes-shm":
        imports += ["import io", "from PIL import Image", *POOL_IMPORTS["processes"]]
        imports += ["from multiprocessing import shared_memory"]
        tail = SHM
    else:
        imports += POOL_IMPORTS.get(variant, [])
        tail = POOL_RUN.get(variant, POOL_RUN["sequential"]).format(fn=fn, items="blobs")
        if not pixels:
            tail = tail.replace("images =", "shapes =")
    tail = first + "blobs = [read(p) for p in FILES]  # the bytes first, then the clock\n" + tail
    return code(dataset, imports, constants, body, tail)


# processes-shm: each worker decodes into its image's slot of one shared-memory block
SHM = '''
def size(data):
    with Image.open(io.BytesIO(data)) as img:
        return (224, 224, 3) if CROP else (img.height, img.width, 3)


shapes = [size(b) for b in blobs]
offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes]).tolist()
block = shared_memory.SharedMemory(create=True, size=max(offsets[-1], 1))


def into_slot(i):
    """Decode image i into its slot; only its index comes back."""
    shm = shared_memory.SharedMemory(name=block.name)
    slot = np.ndarray(shapes[i], np.uint8, buffer=shm.buf, offset=offsets[i])
    slot[...] = decode(blobs[i])
    del slot
    shm.close()
    return i


with ProcessPoolExecutor(max_workers=WORKERS) as pool:
    done = list(pool.map(into_slot, range(len(blobs))))
images = [
    np.ndarray(s, np.uint8, buffer=block.buf, offset=o).copy() for s, o in zip(shapes, offsets)
]
block.close()
block.unlink()
'''
