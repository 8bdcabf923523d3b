"""Sampling: a seeded sample of the user's own images, copied into a dataset folder.

The source folder is only ever read. Each candidate is read once, decoded by every installed
decoder in a sandbox (a child process with a memory limit, a time limit and a pixel cap, so a
decoder that crashes on a damaged file cannot take the sampling down), and its bytes copied;
a file some decoder refuses is left out and replaced by the next candidate, listed in
skipped.csv with the decoder and its message (``on_invalid`` skip, the default), or kept where
Pillow reads it, listed in refused.csv with each decoder that refuses it and its message
(``keep``: the cells of those decoders are then left out with one line,
imgread.dataset.refused), or an error (``fail``).

Every installed decoder checks, not only those the config uses, so adding a decoder to the
config does not change an existing dataset; dataset.json records which decoders checked it.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgread.dataset.folder import (
    DEFAULT_SEED,
    IMAGES_DIR,
    REFUSED_NAME,
    SKIPPED_NAME,
    SOURCES_NAME,
    prepare_out_dir,
    write_failed,
    write_image,
    write_info,
)
from imgread.dataset.identity import content_id
from imgread.dataset.manifest import ImageEntry, write_manifest
from imgread.decoders.registry import installed
from imgread.decoders.sandbox import Sandbox
from imgread.errors import UserError
from imgread.util import Progress, atomic_path, write_text_atomic

CANDIDATE_EXTENSIONS = (".jpg", ".jpeg")
ON_INVALID = ("skip", "keep", "fail")


def find_candidates(source: Path, include_png: bool = False) -> list[Path]:
    """Image files under ``source`` (recursive, symlinked folders not followed), sorted."""
    exts = CANDIDATE_EXTENSIONS + ((".png",) if include_png else ())
    found = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts):
                found.append(Path(dirpath) / name)
    return found


def checking_decoders() -> list[str]:
    """The decoders that check every sampled image: each one installed here, Pillow first
    (its message is the one a file every decoder refuses is skipped with)."""
    return sorted(installed(), key=lambda n: n != "pillow")


def _refusal(path: Path, o) -> str:
    text = o.message.replace(f"{path}: ", "").replace("ImageDecodeError: ", "")
    return text if text.startswith("decoder ") else f"decoder {o.decoder}: {text}"


def _judge(box: Sandbox, path: Path, decoders: list[str], keep: bool = False):
    """((width, height), [(decoder, refusal)]) of a file every decoder reads (with ``keep``:
    that Pillow, the first, reads; the others' refusals listed), or the reason it is left out,
    naming its decoder."""
    outcomes = box.check(path, decoders)
    refused = [(o.decoder, _refusal(path, o)) for o in outcomes if o.bad]
    if refused and (not keep or outcomes[0].bad):
        return refused[0][1]
    ok = [o for o in outcomes if o.status == "ok"]
    if not ok:
        return "no installed decoder reads this format"
    return ok[0].size, refused


def _read(path: Path) -> bytes | str:
    """The file's bytes, or the reason they cannot be used."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    return data or "empty file"


def sample(
    source: str | os.PathLike,
    out: str | os.PathLike,
    count: int,
    seed: int = DEFAULT_SEED,
    include_png: bool = False,
    on_invalid: str = "skip",
    progress: bool = True,
    sandbox: Sandbox | None = None,
) -> Path:
    """Copy ``count`` valid images chosen by ``seed`` from ``source`` into ``out``.

    The source folder is only read. Candidates are visited in a seeded shuffled order; each is
    read once, decoded by every installed decoder in a sandbox, and its bytes copied. Files that
    cannot be read or that some decoder refuses are listed in skipped.csv (and on stderr) and
    replaced by the next candidate; ``on_invalid='fail'`` makes any an error. ``sandbox``: one
    already started (the caller closes it); a fresh one otherwise.
    """
    source = Path(source)
    out = Path(out)
    src_real, candidates = _check_request(source, out, count, include_png, on_invalid)
    prepare_out_dir(out)
    write_info(out, {"kind": "sampled", "complete": False, "source": str(src_real)})
    rng = np.random.default_rng([seed, 0x5A3])
    taken = _Taken(source, out, on_invalid, checking_decoders())
    bar = Progress(count, f"sample {source}", enabled=progress)
    taken.box = sandbox or Sandbox()
    try:
        for i in rng.permutation(len(candidates)):
            if len(taken.entries) == count:
                break
            if taken.take(candidates[i]):
                bar.update()
    finally:
        if sandbox is None:
            taken.box.close()
    _write_skipped(out, taken.skipped)
    if on_invalid == "keep":
        _write_refused(out, taken.refused)
    if len(taken.entries) < count:
        raise UserError(
            f"--source {source}: found {len(taken.entries)} valid images, fewer than the "
            f"{count} asked for ({len(taken.skipped)} skipped, listed in {out / SKIPPED_NAME})"
        )
    _write_sources(out, taken.sources)
    manifest = write_manifest(out, taken.entries)
    write_info(
        out,
        {
            "kind": "sampled",
            "complete": True,
            "source": str(src_real),
            "count": count,
            "seed": seed,
            "include_png": include_png,
            "skipped": len(taken.skipped),
            "on_invalid": on_invalid,
            "refused": len(taken.refused),
            "checked_by": taken.decoders,
        },
    )
    return manifest


def _check_request(
    source: Path, out: Path, count: int, include_png: bool, on_invalid: str
) -> tuple[Path, list[Path]]:
    """Refuse a request that cannot work; return the resolved source and its candidates."""
    if on_invalid not in ON_INVALID:
        raise UserError(f"on_invalid must be one of {', '.join(ON_INVALID)}, got {on_invalid!r}")
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    if not source.is_dir():
        raise UserError(f"--source {source} is not a folder")
    src_real, out_real = source.resolve(), out.resolve()
    if out_real == src_real or src_real in out_real.parents or out_real in src_real.parents:
        raise UserError(f"--out {out} must not be inside --source {source} (or contain it)")
    candidates = find_candidates(source, include_png)
    if not candidates:
        exts = ", ".join(CANDIDATE_EXTENSIONS + ((".png",) if include_png else ()))
        raise UserError(f"--source {source} holds no images ({exts}, searched recursively)")
    return src_real, candidates


@dataclass
class _Taken:
    """The images copied so far, the files skipped and why, and each copy's source path."""

    source: Path
    out: Path
    on_invalid: str
    decoders: list[str]
    box: Sandbox | None = None
    entries: list[ImageEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)  # path, decoder, why
    sources: list[tuple[str, str]] = field(default_factory=list)
    seen_real: set[Path] = field(default_factory=set)

    def take(self, path: Path) -> bool:
        """Copy ``path`` as the next image if it is valid and new; say whether it was."""
        rel_src = str(path.relative_to(self.source))
        real = Path(os.path.realpath(path))  # never raises, even on a symlink loop
        if real in self.seen_real:
            self.skipped.append((rel_src, "duplicate of another candidate (symlink)"))
            return False
        self.seen_real.add(real)
        data = _read(path)
        if isinstance(data, str):
            self._skip(path, rel_src, data)
            return False
        k = len(self.entries)
        rel = f"{IMAGES_DIR}/{k:05d}{path.suffix.lower()}"
        dest = self.out / rel
        try:
            write_image(dest, data)
        except OSError as exc:
            raise write_failed(exc, self.out) from None
        # the copy is what the decoders check: the bytes the dataset holds, the source read once
        result = _judge(self.box, dest, self.decoders, keep=self.on_invalid == "keep")
        if isinstance(result, str):
            dest.unlink()
            self._skip(path, rel_src, result)
            return False
        (width, height), refused = result
        for decoder, why in refused:
            self.refused.append((rel, decoder, why))
            print(f"imgread: kept {path} ({rel}), refused by {why}", file=sys.stderr)
        self.sources.append((rel, rel_src))
        digest, mtime_ns = content_id(data), os.stat(dest).st_mtime_ns
        self.entries.append(ImageEntry(k, rel, len(data), width, height, digest, mtime_ns))
        return True

    def _skip(self, path: Path, rel_src: str, reason: str) -> None:
        """List an invalid file (and say so on stderr); an error where on_invalid is 'fail'."""
        self.skipped.append((rel_src, reason))
        print(f"imgread: skipped {path}: {reason}", file=sys.stderr)
        if self.on_invalid == "fail":
            _write_skipped(self.out, self.skipped)
            raise UserError(
                f"invalid image {path}: {reason} (on_invalid=fail; use skip to ignore such files)"
            )


def _write_skipped(out: Path, skipped: Iterable[tuple[str, str]]) -> None:
    with atomic_path(out / SKIPPED_NAME) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["source_path", "reason"])
            writer.writerows(skipped)


def _write_refused(out: Path, refused: Iterable[tuple[str, str, str]]) -> None:
    """refused.csv: each kept image some decoder refuses (path in the dataset), the decoder,
    and its message (imgread.dataset.refused reads it)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("path", "decoder", "reason"), *refused])
    write_text_atomic(out / REFUSED_NAME, buf.getvalue())


def _write_sources(out: Path, sources: Iterable[tuple[str, str]]) -> None:
    """sources.csv: each copied image's path in the dataset and in the user's folder."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("path", "source"), *sources])
    write_text_atomic(out / SOURCES_NAME, buf.getvalue())
