"""The dataset manifest: one row per image, in the fixed shuffled order subsets are taken from."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from imgread.errors import UserError
from imgread.util import write_text_atomic

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ImageEntry:
    """One image of a dataset, as the manifest records it."""

    order: int
    path: str  # relative to the dataset folder
    bytes: int
    width: int
    height: int
    sha256: str
    mtime_ns: int

    @property
    def pixels(self) -> int:
        """Decoded pixel count (width x height)."""
        return self.width * self.height


COLUMNS = [f.name for f in fields(ImageEntry)]


@dataclass(frozen=True)
class Manifest:
    """A dataset: its folder, its images in subset order, and an id derived from its content."""

    root: Path
    entries: tuple[ImageEntry, ...]
    dataset_id: str

    def __len__(self) -> int:
        return len(self.entries)

    def subset(self, n: int) -> tuple[ImageEntry, ...]:
        """The first ``n`` images: a larger ``n`` always contains every image of a smaller one."""
        if n < 1:
            raise UserError(f"n_images must be at least 1, got {n}")
        if n > len(self.entries):
            raise UserError(
                f"n_images={n} is larger than the dataset ({len(self.entries)} images in "
                f"{self.root / MANIFEST_NAME}); generate or sample a larger dataset"
            )
        return self.entries[:n]

    def paths(self, n: int) -> list[Path]:
        """Absolute paths of the first ``n`` images."""
        return [self.root / e.path for e in self.subset(n)]


def render_manifest(entries: list[ImageEntry]) -> str:
    """The manifest's CSV text (sorted by order)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for e in sorted(entries, key=lambda e: e.order):
        writer.writerow(asdict(e))
    return buf.getvalue()


def write_manifest(root: str | os.PathLike, entries: list[ImageEntry]) -> Path:
    """Write ``root/manifest.csv`` atomically and return its path."""
    dest = Path(root) / MANIFEST_NAME
    write_text_atomic(dest, render_manifest(entries))
    return dest


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest.csv (or the folder holding one); errors name the file and the bad row."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"manifest not found: {path} (create one with 'imgread dataset generate')")
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    missing = set(COLUMNS) - set(reader.fieldnames or [])
    if missing:
        raise UserError(f"{path}: not an imgread manifest, missing columns {sorted(missing)}")
    entries = []
    for lineno, row in enumerate(reader, start=2):
        try:
            entries.append(
                ImageEntry(
                    order=int(row["order"]),
                    path=row["path"],
                    bytes=int(row["bytes"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    sha256=row["sha256"],
                    mtime_ns=int(row["mtime_ns"]),
                )
            )
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}, line {lineno}: malformed row ({exc})") from None
    entries.sort(key=lambda e: e.order)
    if [e.order for e in entries] != list(range(len(entries))):
        raise UserError(f"{path}: the 'order' column must be 0..N-1 without gaps")
    dataset_id = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Manifest(root=path.parent.resolve(), entries=tuple(entries), dataset_id=dataset_id)
