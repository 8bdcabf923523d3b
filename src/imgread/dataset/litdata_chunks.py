"""A dataset's first n images as LitData chunks (``litdata.optimize``): a derived dataset,
beside the tar shards.

Each image of the manifest's first n, in the manifest's order, becomes one sample
``{"index": its position, "image": its file's bytes unchanged, "label": its class}``, written by
``litdata.optimize`` (one worker, so that the order is the manifest's) into chunks of at most
``shard_mb`` MB (``chunk_bytes``). They live in ``<dataset>/litdata/<mb>mb-<n>/``: litdata's
own ``index.json`` and ``chunk-0-<i>.bin``, and imgread's stamp ``imgread.json`` (the dataset
id, n, chunk_bytes, litdata's version, every chunk's name and size).

Made once, outside any timed region: under a temporary name beside the final one, renamed
into place when whole (a reader never sees half a folder). Two trials that make it at once
both build; the second rename fails and its copy is removed, the first one's is used. A
folder whose stamp is of another version of the dataset, or whose chunks are not all there at
their size, is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from imgread.dataset.labels import labels as class_labels
from imgread.dataset.manifest import Manifest
from imgread.errors import UserError
from imgread.util import write_json_atomic

LITDATA_DIR = "litdata"
STAMP_NAME = "imgread.json"
INDEX_NAME = "index.json"  # litdata's own


@dataclass(frozen=True)
class Chunks:
    """The chunks of a dataset's first n images: their folder, litdata's files in it (index and
    chunks), the chunks' bytes, and whether this call made them (and in how long)."""

    folder: Path
    chunks: tuple[str, ...]
    bytes: int
    made: bool
    seconds: float

    def files(self) -> list[str]:
        """Every file a reader opens: litdata's index and each chunk, absolute."""
        return [str(self.folder / INDEX_NAME), *(str(self.folder / c) for c in self.chunks)]


def chunk_dir(root: str | os.PathLike, shard_mb: int, n: int) -> Path:
    """Where the chunks of ``shard_mb`` MB of the first ``n`` images of ``root`` live."""
    return Path(root) / LITDATA_DIR / f"{int(shard_mb)}mb-{int(n)}"


def sample(item: tuple[int, str, int]) -> dict:
    """One sample as litdata.optimize stores it: (position, path, class) -> its fields."""
    index, path, label = item
    return {"index": int(index), "image": Path(path).read_bytes(), "label": int(label)}


def _stamp(folder: Path, dataset_id: str, n: int, chunk_bytes: int) -> dict | None:
    """The folder's stamp where it is of this dataset, n and chunk size and every chunk is
    there at its size; None otherwise (absent, stale or half gone)."""
    try:
        stamp = json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    want = {"dataset_id": dataset_id, "images": n, "chunk_bytes": chunk_bytes}
    if any(stamp.get(k) != v for k, v in want.items()) or not (folder / INDEX_NAME).exists():
        return None
    for name, size in stamp.get("chunks", {}).items():
        try:
            if (folder / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return stamp


def ensure(manifest: Manifest, n: int, shard_mb: int) -> Chunks:
    """The chunks of the first ``n`` images of ``manifest`` at ``shard_mb`` MB: reused where
    whole and of this dataset, made otherwise (atomically; safe for two trials at once)."""
    if int(shard_mb) < 1:
        raise UserError(f"litdata chunks need shard_mb >= 1 (their chunk_bytes), got {shard_mb}")
    chunk_bytes = int(shard_mb) * 1_000_000
    folder = chunk_dir(manifest.root, shard_mb, n)
    made, t0 = False, time.perf_counter()
    stamp = _stamp(folder, manifest.dataset_id, n, chunk_bytes)
    if stamp is None:
        _make(manifest, n, chunk_bytes, folder)
        stamp = _stamp(folder, manifest.dataset_id, n, chunk_bytes)
        made = True
        if stamp is None:
            raise UserError(f"{folder}: the litdata chunks just made are not whole; remove it")
    sizes = stamp["chunks"]
    return Chunks(
        folder, tuple(sizes), sum(sizes.values()), made, time.perf_counter() - t0 if made else 0.0
    )


def _make(manifest: Manifest, n: int, chunk_bytes: int, folder: Path) -> None:
    """litdata.optimize of the first ``n`` images into a temporary folder, renamed onto
    ``folder`` (a stale one replaced; a whole one made meanwhile by another trial kept).

    optimize runs in a child Python of its own: it sets the process's multiprocessing start
    method (``set_start_method(force=True)``; spawn by default, which also needs an importable
    ``__main__``) and takes its work folders from the environment: neither is the trial's."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    out = work / "chunks"
    env = dict(
        os.environ,
        # optimize's own work folders (default /tmp/chunks, /tmp/data): this build's
        DATA_OPTIMIZER_CACHE_FOLDER=str(work / "cache"),
        DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(work / "data"),
    )
    entries, labels = manifest.subset(n), class_labels(manifest)[:n]
    job = {
        "dataset_id": manifest.dataset_id,
        "chunk_bytes": chunk_bytes,
        "items": [
            (i, str(manifest.root / e.path), int(y))
            for i, (e, y) in enumerate(zip(entries, labels, strict=True))
        ],
    }
    write_json_atomic(work / "job.json", job, indent=None)
    cmd = [sys.executable, "-m", __name__, str(work / "job.json"), str(out)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise UserError(f"litdata.optimize into {folder} failed:\n{tail}")
        _place(out, folder, manifest.dataset_id, n, chunk_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def optimize(job_path: str, out: str) -> None:
    """litdata.optimize of the job's items (``_make``'s job.json: [position, path, class])
    into ``out`` (which must not exist), then imgread's stamp beside litdata's index."""
    import litdata

    job = json.loads(Path(job_path).read_text())
    items, chunk_bytes = [tuple(x) for x in job["items"]], int(job["chunk_bytes"])
    n = len(items)
    litdata.optimize(
        fn=sample,
        inputs=items,
        output_dir=out,
        chunk_bytes=chunk_bytes,
        num_workers=1,  # one writer: the chunks hold the manifest's order
        start_method="fork",  # this child is single-threaded: no second interpreter to start
        reorder_files=False,
        verbose=False,
    )
    folder = Path(out)
    index = json.loads((folder / INDEX_NAME).read_text())
    names = [c["filename"] for c in index["chunks"]]
    held = sum(c["chunk_size"] for c in index["chunks"])
    if held != n:
        raise UserError(f"{out}: litdata.optimize wrote chunks of {held} images, not {n}")
    stamp = {
        "dataset_id": job["dataset_id"],
        "images": n,
        "chunk_bytes": chunk_bytes,
        "litdata": metadata.version("litdata"),
        "chunks": {c: (folder / c).stat().st_size for c in names},
        "sample": "{index: manifest position, image: the file's bytes, label: class}",
    }
    write_json_atomic(folder / STAMP_NAME, stamp, indent=2)


def _place(out: Path, folder: Path, dataset_id: str, n: int, chunk_bytes: int) -> None:
    """Rename ``out`` onto ``folder``; a stale ``folder`` is moved aside first, a whole one
    (another trial's, renamed meanwhile) is kept and ``out`` dropped."""
    for _ in range(3):
        try:
            os.rename(out, folder)
            return
        except OSError:  # ENOTEMPTY / EEXIST: a folder is there
            if _stamp(folder, dataset_id, n, chunk_bytes) is not None:
                return  # another trial's whole copy won: use it
            aside = Path(
                tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent)
            )
            try:
                os.rename(folder, aside / "stale")
            except FileNotFoundError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
    raise UserError(f"{folder}: could not put the litdata chunks in place; remove it and retry")


if __name__ == "__main__":  # the child of _make: job.json out
    optimize(sys.argv[1], sys.argv[2])
