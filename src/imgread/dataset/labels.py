"""A dataset's class labels, as ImageFolder gives them: the first folder level of each image's
path in the user's folder (``sources.csv`` of a sampled dataset), 0 for every image otherwise."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from imgread.dataset.folder import SOURCES_NAME
from imgread.dataset.manifest import Manifest


def labels(manifest: Manifest) -> np.ndarray:
    """One label per image: the index of the first folder level of each image's path in the
    user's folder (sampled datasets, as ImageFolder does), else 0 for every image."""
    sources = manifest.root / SOURCES_NAME
    if not sources.is_file():
        return np.zeros(len(manifest), dtype=np.int64)
    with open(sources, encoding="utf-8", newline="") as fh:
        by_path = {row["path"]: row["source"] for row in csv.DictReader(fh)}
    classes = [
        Path(by_path.get(e.path, "")).parts[0]
        if len(Path(by_path.get(e.path, "")).parts) > 1
        else ""
        for e in manifest.entries
    ]
    names = sorted(set(classes))
    return np.array([names.index(c) for c in classes], dtype=np.int64)
