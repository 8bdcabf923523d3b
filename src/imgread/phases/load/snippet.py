"""The load phase's code to paste (imgread.answer.snippets): the files' bytes read one after
another, by a thread or process pool of ``workers``, or by asyncio (aiofiles; a semaphore of
``in_flight``); from an object store through the row's client; the tar shards read whole
and split. It leaves ``blobs``, the bytes of each image in order.
"""

from __future__ import annotations

from imgread.answer.snippet_parts import POOL_IMPORTS, POOL_RUN, code, reader


def snippet(variant: str, workers: int, p: dict, dataset: str) -> str:
    """The load row's snippet: the reader's pool over the files (or the shards), ``blobs``."""
    rimports, read = reader(p["remote"], p.get("client", "imgread"))
    constants = {"WORKERS": workers, **({"POOL": workers} if p["remote"] else {})}
    imports = list(rimports)
    if variant == "asyncio":
        flight = int(p.get("in_flight", "0") or 0)
        constants["IN_FLIGHT"] = flight
        imports += ["import asyncio"] + ([] if p["remote"] else ["import aiofiles"])
        get = "await asyncio.to_thread(read, path)" if p["remote"] else "await fh.read()"
        opens = "" if p["remote"] else "async with aiofiles.open(path, 'rb') as fh:\n" + " " * 12
        tail = ASYNC_LOAD.replace("GET", get).replace("OPEN", opens)
    else:
        imports += POOL_IMPORTS.get(variant, [])
        tail = POOL_RUN.get(variant, POOL_RUN["sequential"]).format(fn="read", items="FILES")
        tail = tail.replace("images =", "blobs =")
    if p.get("shard_mb", "0") not in ("0", ""):
        imports += ["import io", "import tarfile"]
        tail = SHARDS.replace("SHARD_MB", p["shard_mb"]) + "\n" + tail + SPLIT
    return code(dataset, imports, constants, read, tail)


ASYNC_LOAD = '''
async def fetch(path, limit):
    """One read, at most IN_FLIGHT at once (0: all at once)."""
    async with limit:
        OPENreturn GET


async def main():
    limit = asyncio.Semaphore(IN_FLIGHT or len(FILES) or 1)
    return await asyncio.gather(*(fetch(p, limit) for p in FILES))


blobs = asyncio.run(main())
'''
# The load phase's shards: tar files of SHARD_MB MB, each read whole, then split into images.
SHARDS = """
# shard_mb=SHARD_MB: the images in tar shards of SHARD_MB MB, each shard read whole
DATA = os.environ.get("IMGREAD_SHARDS", os.path.join(DATA, "..", "shards", "SHARD_MBmb"))
FILES = sorted(glob.glob(os.path.join(DATA, "*.tar")))
"""
SPLIT = """

blobs = [
    tar.extractfile(m).read()
    for shard in blobs
    for tar in [tarfile.open(fileobj=io.BytesIO(shard))]
    for m in tar.getmembers()
    if m.isfile()
]
"""
