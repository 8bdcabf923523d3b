"""A copy of a dataset on node-local disk, for trials that read from the device on a cluster.

On a shared filesystem, cold reads on several nodes at once disturb each other; a copy on each
node's own disk does not. The copy is made once per node and dataset, outside any timed region,
and holds everything a trial reads of the dataset: the images (each with its size and
modification time, which the trial checks against the manifest), ``manifest.csv``,
``dataset.json``, ``sources.csv`` (a sampled dataset's labels), ``refused.csv`` (its kept images
some decoder refuses) and the tar shards.

A copy is used only when it is whole, private and of this very dataset:
- it lives under a parent folder of this user's own, ``<stage_dir>/imgread-<uid>``, mode 0700,
  whose owner and mode are checked without following links (a link, or a folder of another
  user's, is refused: nobody else can put a copy where this user reads one);
- it is built under a temporary name and renamed into place, and its stamp (``.staged.json``:
  the SHA-256 of the source's manifest and of every other file copied besides the images, and
  every file's size) is written last, before the rename;
- before each use the stamp is checked against the source and every file's size against it;
  a copy that fails (half-made, stale, foreign, changed) is replaced, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from imgread.dataset.folder import INFO_NAME, REFUSED_NAME, SOURCES_NAME
from imgread.dataset.manifest import MANIFEST_NAME, Manifest, read_manifest
from imgread.dataset.shards import SHARDS_DIR
from imgread.errors import UserError

STAMP_NAME = ".staged.json"
STAMP_VERSION = 1
# Files of the dataset folder a trial reads besides the images (the decoded cache and the
# reference checksums reach a trial as inputs of their own, by path).
SIDE_FILES = (MANIFEST_NAME, INFO_NAME, SOURCES_NAME, REFUSED_NAME)


def stage_root(stage_dir: str | None) -> Path:
    """The node-local folder: ``stage_dir``, else $TMPDIR, else /tmp."""
    return Path(stage_dir or os.environ.get("TMPDIR") or "/tmp")


def private_parent(stage_dir: str | None) -> Path:
    """This user's folder under the stage root (made mode 0700 if missing); UserError if it
    is a link, not a folder, another user's, or writable by others."""
    root = stage_root(stage_dir)
    root.mkdir(parents=True, exist_ok=True)
    parent = root / f"imgread-{os.getuid()}"
    try:
        os.mkdir(parent, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(parent)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UserError(f"stage folder {parent} is not a plain folder (a link?): remove it")
    if st.st_uid != os.getuid():
        raise UserError(
            f"stage folder {parent} belongs to uid {st.st_uid}, not to you ({os.getuid()}): "
            "remove it, or set cluster.stage_dir to a folder of your own"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(parent, 0o700)  # ours: make it private before anything goes in
    return parent


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _side_files(root: Path) -> list[str]:
    """The dataset's files besides its images, relative to its folder: the side files that
    exist and every file of its shards."""
    found = [name for name in SIDE_FILES if (root / name).is_file()]
    shards = root / SHARDS_DIR
    if shards.is_dir():
        found += sorted(str(p.relative_to(root)) for p in shards.rglob("*") if p.is_file())
    return found


def expected_stamp(source: Manifest) -> dict:
    """What a whole, current copy of ``source`` records: hashes of the side files, and the
    size of every file (the images' sizes from the manifest)."""
    side = _side_files(source.root)
    return {
        "version": STAMP_VERSION,
        "dataset_id": source.dataset_id,
        "sha256": {name: _sha256(source.root / name) for name in side},
        "sizes": {
            **{e.path: e.bytes for e in source.entries},
            **{name: (source.root / name).stat().st_size for name in side},
        },
    }


def copy_problem(copy: Path, stamp: dict) -> str | None:
    """Why ``copy`` may not be used for a dataset whose stamp is ``stamp`` (None: it may)."""
    try:
        st = os.lstat(copy)
    except FileNotFoundError:
        return "no copy yet"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "not a plain folder"
    if st.st_uid != os.getuid():
        return f"made by uid {st.st_uid}"
    try:
        found = json.loads((copy / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "half-made (no stamp)"
    if found.get("sha256") != stamp["sha256"] or found.get("version") != STAMP_VERSION:
        return "stale (the source changed)"
    for name, size in stamp["sizes"].items():
        try:
            if os.lstat(copy / name).st_size != size:
                return f"{name} changed"
        except FileNotFoundError:
            return f"{name} missing"
    return None


def _remove(path: Path, parent: Path) -> None:
    """Move ``path`` (a link, a folder, anyone's) aside in our private parent and delete it."""
    aside = Path(tempfile.mkdtemp(prefix=".replaced.", dir=parent))
    os.rename(path, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


def _build(source: Manifest, stamp: dict, parent: Path) -> Path:
    """A whole copy of ``source`` under a temporary name in ``parent``; its stamp last."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.dataset_id}.", dir=parent))
    try:
        for rel in [e.path for e in source.entries] + list(stamp["sha256"]):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.root / rel, target)  # copy2 keeps the mtime
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, sort_keys=True), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def staged_manifest(manifest: str | os.PathLike, stage_dir: str | None) -> Path:
    """The manifest of this dataset's checked copy under ``stage_dir``: used if whole and
    current, otherwise (re)made now."""
    source = read_manifest(manifest)
    parent = private_parent(stage_dir)
    dest = parent / source.dataset_id
    stamp = expected_stamp(source)
    if copy_problem(dest, stamp) is None:
        return dest / MANIFEST_NAME
    tmp = _build(source, stamp, parent)
    try:
        if os.path.lexists(dest):
            if copy_problem(dest, stamp) is None:  # another trial on this node made it
                shutil.rmtree(tmp, ignore_errors=True)
                return dest / MANIFEST_NAME
            _remove(dest, parent)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if copy_problem(dest, stamp) is not None:  # lost a race to a copy that is not whole
            raise
    return dest / MANIFEST_NAME
