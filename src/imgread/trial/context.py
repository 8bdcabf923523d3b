"""A trial's context: everything its phase is handed, read once when the trial is prepared.

The trial (imgread.trial.run) reads the manifest and the dataset's ``dataset.json`` once,
checks the files against the manifest, resolves the params and takes the spec's cold-or-warm
answer; the phase's jobs and, once the storage session is up, its opener are added as the
trial goes down (each step a new frozen context). Every trial hook of a phase
(imgread.phases.base: ``jobs``, ``check``, ``cache_files``, a variant's ``start``, ``verify``)
and the record read this, so no file is read twice and nothing is decided twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from imgread.dataset.folder import encoding_label, read_info
from imgread.dataset.manifest import MANIFEST_NAME, ImageEntry, Manifest, read_manifest
from imgread.errors import UserError
from imgread.storage.base import Opener, Profile

SAMPLED = "as sampled"  # the encoding of a dataset whose files keep their own


@dataclass(frozen=True)
class TrialContext:
    """One trial's data, as its phase sees it. ``jobs`` are the phase's own
    (imgread.phases.base.Job, made from ``root``, ``entries`` and ``params``); ``opener`` reads
    the bytes through the trial's storage (None before its session is up, or outside a
    trial: the files where they are)."""

    variant: str
    workers: int
    params: dict[str, str]  # resolved: every key of the phase, defaults filled in
    manifest: Manifest
    entries: tuple[ImageEntry, ...]  # the manifest's first n_images
    jobs: tuple = ()
    dataset: str = ""  # the dataset's name ("": its folder's)
    encoding: str = SAMPLED  # 'JPEG q92, 4:2:0, baseline' of a generated dataset
    reference: str | None = None  # the checksums the delivered pixels are checked against
    cache_dir: str | None = None  # a decoded cache (imgread cache build)
    manifest_path: str = ""  # the manifest as the spec named it
    cold: bool = False  # the spec's answer: starts from a cold page cache
    profile: Profile | None = None  # the storage profile (None: the files where they are)
    opener: Opener | None = None

    @property
    def root(self) -> Path:
        """The dataset's folder (the manifest's)."""
        return self.manifest.root

    @property
    def dataset_id(self) -> str:
        """The id derived from the manifest's content."""
        return self.manifest.dataset_id

    @property
    def inputs(self) -> dict[str, str]:
        """The trial's input files as a dict (reference, cache_dir where given; manifest), the
        form the hooks of the former contract took."""
        given = (("reference", self.reference), ("cache_dir", self.cache_dir))
        manifest = self.manifest_path or str(self.root / MANIFEST_NAME)
        return {**{k: v for k, v in given if v}, "manifest": manifest}

    def with_jobs(self, jobs) -> TrialContext:
        """This context with the phase's jobs."""
        return replace(self, jobs=tuple(jobs))

    def with_opener(self, opener: Opener | None) -> TrialContext:
        """This context once the storage session is up: its opener."""
        return replace(self, opener=opener)


@dataclass(frozen=True)
class Dataset:
    """A dataset as a trial reads it once: its manifest, the trial's images, its encoding."""

    manifest: Manifest
    entries: tuple[ImageEntry, ...]
    encoding: str


def read_dataset(manifest_path: str | os.PathLike, n_images: int) -> Dataset:
    """Read the manifest and ``dataset.json`` (once each), take the first ``n_images`` and
    check that every one still has the manifest's size and mtime (UserError otherwise)."""
    manifest = read_manifest(manifest_path)
    entries = manifest.subset(n_images)
    check_unchanged(manifest.root, entries)
    encoding = encoding_label(read_info(manifest.root)) or SAMPLED
    return Dataset(manifest, entries, encoding)


def check_unchanged(root: Path, entries: tuple[ImageEntry, ...]) -> None:
    """Raise UserError naming the first file whose size or mtime differs from the manifest."""
    for e in entries:
        path = root / e.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise UserError(f"dataset file missing: {path} (listed in the manifest)") from None
        if st.st_size != e.bytes or st.st_mtime_ns != e.mtime_ns:
            raise UserError(
                f"dataset file changed after the manifest was written: {path} "
                f"(size {st.st_size} vs {e.bytes} bytes, mtime_ns {st.st_mtime_ns} vs "
                f"{e.mtime_ns}); regenerate or resample the dataset"
            )
