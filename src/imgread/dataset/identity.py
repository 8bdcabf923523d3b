"""What identifies an image of a dataset: the sha256 of its bytes, recorded in the manifest,
and the check that every file still has it."""

from __future__ import annotations

import hashlib
import os

from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError
from imgread.util import Progress


def content_id(data: bytes) -> str:
    """The sha256 hex digest of an image's bytes, as the manifest records it."""
    return hashlib.sha256(data).hexdigest()


def verify_hashes(manifest_path: str | os.PathLike, progress: bool = True) -> int:
    """Check every file's size and sha256 against the manifest; return the files checked."""
    m = read_manifest(manifest_path)
    bar = Progress(len(m), f"verify {m.root}", enabled=progress)
    for e in m.entries:
        path = m.root / e.path
        try:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except FileNotFoundError:
            raise UserError(f"dataset file missing: {path} (listed in the manifest)") from None
        if digest != e.sha256:
            raise UserError(
                f"dataset file changed after the manifest was written: {path} "
                "(sha256 differs); regenerate or resample the dataset"
            )
        bar.update()
    return len(m)
