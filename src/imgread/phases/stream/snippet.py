"""The stream phase's code to paste (imgread.answer.snippets): frames arriving at ``fps``,
read and decoded to the 224 crop by the row's producer (inline, a thread or process pool of
``workers``, a thread per frame, asyncio, or a ``tf.data`` pipeline) at most ``prefetch``
ahead of the model (a sleep or numpy work of ``compute_ms``), in arrival order. It leaves
``images``, the frames in order.
"""

from __future__ import annotations

from imgread.answer.snippet_parts import code, header, parts
from imgread.answer.snippet_tf import TF_SETUP, tf_parts


def snippet(variant: str, workers: int, p: dict, dataset: str) -> str:
    """The stream row's snippet: the producer, ``prefetch`` frames ahead of the model."""
    imports, body, first, constants = parts(p, True, max(workers, 1))
    constants.update(
        WORKERS=workers,
        FPS=int(p.get("fps", "0") or 0),
        PREFETCH=int(p.get("prefetch", "4") or 4),
        COMPUTE_MS=float(p.get("compute_ms", "0") or 0),
    )
    imports += ["import time"]
    model = MODEL_CPU if p.get("compute") == "cpu" else MODEL_SLEEP
    kind = STREAM_KINDS.get(variant, "sequential")
    if kind == "tf":
        return tf_stream(imports, constants, body + model, first, dataset)
    imports += STREAM_IMPORTS[kind]
    tail = first + STREAM_RUN[kind]
    return code(dataset, imports, constants, body + model + PRODUCE, tail)


MODEL_SLEEP = '''

def model(frame):
    """Your model; here COMPUTE_MS ms of an accelerator (a sleep, no CPU)."""
    time.sleep(COMPUTE_MS / 1000)
'''
MODEL_CPU = '''

def model(frame):
    """Your model; here COMPUTE_MS ms of numpy work holding a core."""
    end = time.perf_counter() + COMPUTE_MS / 1000
    x = np.linspace(0.0, 1.0, 1 << 16, dtype=np.float32)
    while time.perf_counter() < end:
        np.sqrt(x, out=x)
'''
PRODUCE = '''

def produce(i, start):
    """Frame i: it arrives at i / FPS (FPS 0: all at once), then is read and decoded."""
    if FPS:
        time.sleep(max(0.0, start + i / FPS - time.perf_counter()))
    return decode(read(FILES[i]))
'''
STREAM_KINDS = {
    "sequential": "sequential",
    "threads": "pool",
    "processes": "processes",
    "thread-per-frame": "thread",
    "asyncio": "asyncio",
    "tf-data": "tf",
}
STREAM_IMPORTS = {
    "sequential": [],
    "pool": ["import collections", "from concurrent.futures import ThreadPoolExecutor"],
    "processes": ["import collections", "from concurrent.futures import ProcessPoolExecutor"],
    "thread": ["import collections", "import threading"],
    "asyncio": ["import collections", "import asyncio"],
}
STREAM_RUN = {
    "sequential": """
start, images = time.perf_counter(), []
for i in range(len(FILES)):
    images.append(produce(i, start))
    model(images[-1])
""",
    # at most PREFETCH frames decoded ahead of the model, in arrival order
    "pool": """
start, images, ahead = time.perf_counter(), [], collections.deque()
with ThreadPoolExecutor(max_workers=WORKERS) as pool:
    for i in range(len(FILES)):
        ahead.append(pool.submit(produce, i, start))
        if len(ahead) > PREFETCH:
            images.append(ahead.popleft().result())
            model(images[-1])
    while ahead:
        images.append(ahead.popleft().result())
        model(images[-1])
""",
    "thread": """
start, images, ahead = time.perf_counter(), [], collections.deque()
frames = [None] * len(FILES)


def one(i):
    frames[i] = produce(i, start)


for i in range(len(FILES)):
    t = threading.Thread(target=one, args=(i,))  # a thread per frame
    t.start()
    ahead.append((i, t))
    while len(ahead) > PREFETCH or (ahead and i == len(FILES) - 1):
        j, t = ahead.popleft()
        t.join()
        images.append(frames[j])
        model(frames[j])
""",
    "asyncio": """
async def main():
    start, images = time.perf_counter(), []
    limit = asyncio.Semaphore(WORKERS or 1)

    async def frame(i):
        async with limit:
            return await asyncio.to_thread(produce, i, start)

    tasks = collections.deque()
    for i in range(len(FILES)):
        tasks.append(asyncio.ensure_future(frame(i)))
        if len(tasks) > PREFETCH:
            images.append(await tasks.popleft())
            await asyncio.to_thread(model, images[-1])
    while tasks:
        images.append(await tasks.popleft())
        await asyncio.to_thread(model, images[-1])
    return images


images = asyncio.run(main())
""",
}
STREAM_RUN["processes"] = STREAM_RUN["pool"].replace("ThreadPoolExecutor", "ProcessPoolExecutor")


def tf_stream(imports, constants, body: str, first: str, dataset: str) -> str:
    """The stream's tf.data producer: frames released as they arrive, decoded by TensorFlow
    (``num_parallel_calls``), ``prefetch`` of them ahead of the model."""
    crop = "tf.cast(tf.round(image[top : top + 224, left : left + 224, :]), tf.uint8)"
    _, tfbody = tf_parts({"remote": False}, crop)
    tail = (
        first
        + """
def arrivals():
    start = time.perf_counter()
    for i, path in enumerate(FILES):
        if FPS:
            time.sleep(max(0.0, start + i / FPS - time.perf_counter()))
        yield path


frames = (
    tf.data.Dataset.from_generator(arrivals, output_signature=tf.TensorSpec((), tf.string))
    .map(transform, num_parallel_calls=WORKERS or tf.data.AUTOTUNE)
    .prefetch(PREFETCH)
)
images = []
for frame in frames:
    images.append(frame.numpy())
    model(images[-1])
"""
    )
    head = header(dataset, [*imports, "import numpy as np"], {**constants, "RATIO": 1})
    return head + "\n" + TF_SETUP + body + tfbody + "\n\n" + tail.strip() + "\n"
