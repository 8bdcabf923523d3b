"""A copy of a dataset on node-local disk, for trials that read from the device on a cluster.

On a shared filesystem, cold reads on several nodes at once disturb each other; a copy on each
node's own disk does not. The copy keeps every file's size and modification time (the trial
checks both against the manifest) and is made once per node and dataset, outside any timed
region; a half-made copy is never used (it is built under a temporary name, then renamed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from imgread.dataset.manifest import MANIFEST_NAME, read_manifest


def stage_root(stage_dir: str | None) -> Path:
    """The node-local folder: ``stage_dir``, else $TMPDIR, else /tmp."""
    return Path(stage_dir or os.environ.get("TMPDIR") or "/tmp")


def staged_manifest(manifest: str | os.PathLike, stage_dir: str | None) -> Path:
    """The manifest of this dataset's copy under ``stage_dir`` (made now if missing)."""
    source = read_manifest(manifest)
    root = stage_root(stage_dir)
    dest = root / f"imgread-{source.dataset_id}"
    if (dest / MANIFEST_NAME).exists():
        return dest / MANIFEST_NAME
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
    try:
        for e in source.entries:
            target = tmp / e.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.root / e.path, target)  # copy2 keeps the mtime
        for name in (MANIFEST_NAME, "dataset.json"):
            if (source.root / name).exists():
                shutil.copy2(source.root / name, tmp / name)
        try:
            os.rename(tmp, dest)
        except OSError:  # another trial on this node made it first
            if not (dest / MANIFEST_NAME).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / MANIFEST_NAME
