"""A dataset packed into tar shards, in the WebDataset convention: a derived dataset.

Each image of the manifest, in the manifest's fixed order, becomes two members of a POSIX tar
file: ``<key>.<ext>`` (its bytes, unchanged) and ``<key>.cls`` (its class index as text), with
``key`` the image's position in the order (``000042``). Consecutive images fill a shard up to
``shard_mb`` MB (10^6 bytes, tar headers included), so the first n images of the dataset are
the images of the first shards: a trial on n images reads the shards that hold them.

The shards of one size live in ``<dataset>/shards/<mb>mb/`` with their own index
(``shards.csv``: each shard's path, bytes, sha256, first image and image count) and
``shards.json`` (the dataset id they were packed from). The tars are deterministic (mtime 0,
uid 0, mode 0644, sorted as the manifest): packing twice gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from imgread.dataset.labels import labels as class_labels
from imgread.dataset.manifest import ImageEntry, Manifest, read_manifest
from imgread.errors import UserError, VerificationError
from imgread.util import Progress, write_bytes_atomic, write_json_atomic, write_text_atomic

SHARDS_DIR = "shards"
INDEX_NAME = "shards.csv"
INFO_NAME = "shards.json"
BLOCK = 512  # a tar header, and the unit a member's data is padded to
END = 2 * BLOCK  # the two zero blocks that end a tar (tarfile pads the file to 10 KiB)
RECORD = 20 * BLOCK


@dataclass(frozen=True)
class Shard:
    """One shard of the index: its path under the dataset's folder and the images it holds
    (``first`` .. ``first + count - 1`` of the dataset's order)."""

    index: int
    path: str
    bytes: int
    sha256: str
    first: int
    count: int


def shard_dir(root: str | os.PathLike, shard_mb: int) -> Path:
    """Where the shards of ``shard_mb`` MB of the dataset in ``root`` live."""
    return Path(root) / SHARDS_DIR / f"{int(shard_mb)}mb"


def index_path(root: str | os.PathLike, shard_mb: int) -> Path:
    return shard_dir(root, shard_mb) / INDEX_NAME


def key_of(entry: ImageEntry) -> str:
    """The WebDataset key of an image: its position in the order (no dots: webdataset
    splits a member's name at the first dot into key and extension)."""
    return f"{entry.order:06d}"


def extension_of(entry: ImageEntry) -> str:
    return entry.path.rsplit(".", 1)[-1].lower()


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _member_bytes(entry: ImageEntry, label: int) -> int:
    """What an image takes in a shard: its two headers and padded data."""
    return 2 * BLOCK + _padded(entry.bytes) + _padded(len(str(label)))


def _tar_size(payload: int) -> int:
    """A tar's file size for members totalling ``payload`` bytes (tarfile pads to records)."""
    return -(-(payload + END) // RECORD) * RECORD


def plan(entries: tuple[ImageEntry, ...], labels, shard_mb: int) -> list[tuple[ImageEntry, ...]]:
    """The images of each shard: consecutive in the order, each shard at most ``shard_mb``
    MB. UserError where one image alone does not fit."""
    limit = int(shard_mb) * 1_000_000
    groups: list[list[ImageEntry]] = [[]]
    used = 0
    for entry, label in zip(entries, labels, strict=True):
        size = _member_bytes(entry, int(label))
        if _tar_size(size) > limit:
            raise UserError(
                f"shard size {shard_mb} MB is smaller than one image: {entry.path} takes "
                f"{_tar_size(size) / 1e6:.2f} MB in a shard; choose shards of at least "
                f"{-(-_tar_size(size) // 1_000_000)} MB"
            )
        if groups[-1] and _tar_size(used + size) > limit:
            groups.append([])
            used = 0
        groups[-1].append(entry)
        used += size
    return [tuple(g) for g in groups]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _tar(manifest: Manifest, group, labels: dict[int, int]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for e in group:
            data = (manifest.root / e.path).read_bytes()
            if len(data) != e.bytes or hashlib.sha256(data).hexdigest() != e.sha256:
                raise UserError(
                    f"{manifest.root / e.path} differs from its manifest entry; "
                    "regenerate the dataset before packing it"
                )
            _add(tar, f"{key_of(e)}.{extension_of(e)}", data)
            _add(tar, f"{key_of(e)}.cls", str(labels[e.order]).encode())
    return buf.getvalue()


def pack(manifest_path: str | os.PathLike, shard_mb: int, progress: bool = True) -> Path:
    """Pack the dataset of ``manifest_path`` into shards of ``shard_mb`` MB; the index's path.
    Existing shards of that size are replaced (they are derived: nothing of the user's)."""
    manifest = read_manifest(manifest_path)
    labels = [int(x) for x in class_labels(manifest)]
    groups = plan(manifest.entries, labels, shard_mb)
    by_order = {e.order: label for e, label in zip(manifest.entries, labels, strict=True)}
    out = shard_dir(manifest.root, shard_mb)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tar"):
        old.unlink()
    shards = []
    bar = Progress(len(groups), f"pack {out}", enabled=progress)
    first = 0
    for i, group in enumerate(groups):
        data = _tar(manifest, group, by_order)
        rel = f"{SHARDS_DIR}/{int(shard_mb)}mb/shard-{i:06d}.tar"
        write_bytes_atomic(manifest.root / rel, data)
        shards.append(Shard(i, rel, len(data), hashlib.sha256(data).hexdigest(), first, len(group)))
        first += len(group)
        bar.update()
    info = {
        "dataset_id": manifest.dataset_id,
        "shard_mb": int(shard_mb),
        "shards": len(shards),
        "images": first,
        "convention": "webdataset: <key>.<ext> + <key>.cls, key = position in the order",
    }
    write_json_atomic(out / INFO_NAME, info, indent=2)
    return write_index(out / INDEX_NAME, shards)


def write_index(path: Path, shards: list[Shard]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(Shard)], lineterminator="\n")
    writer.writeheader()
    for s in shards:
        writer.writerow(asdict(s))
    write_text_atomic(path, buf.getvalue())
    return path


def read_index(
    root: str | os.PathLike, shard_mb: int, dataset_id: str | None = None
) -> list[Shard]:
    """The shards of ``shard_mb`` MB of the dataset in ``root``; UserError where they were not
    packed, or were packed from other files than the manifest's (``dataset_id``)."""
    path = index_path(root, shard_mb)
    if not path.exists():
        raise UserError(
            f"no {shard_mb} MB shards of {root}: {path} does not exist (the workflow packs them "
            f"where the dataset's shards_mb lists {shard_mb}; or: imgread dataset shards)"
        )
    info_path = path.parent / INFO_NAME
    if dataset_id is not None and info_path.exists():
        made_from = json.loads(info_path.read_text()).get("dataset_id")
        if made_from != dataset_id:
            raise UserError(
                f"{path.parent} was packed from another version of the dataset "
                f"({made_from}, the manifest is {dataset_id}); pack the shards again"
            )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise UserError(f"{path} lists no shards; pack the shards again")
    ints = ("index", "bytes", "first", "count")
    return [Shard(**{k: int(v) if k in ints else v for k, v in r.items()}) for r in rows]


def covering(shards: list[Shard], n: int) -> list[Shard]:
    """The shards that hold the first ``n`` images (the last may hold more)."""
    out = [s for s in shards if s.first < n]
    if not out or out[-1].first + out[-1].count < n:
        held = sum(s.count for s in shards)
        raise UserError(f"the shards hold {held} images, fewer than the {n} asked for")
    return out


def members(data: bytes, where: str = "shard") -> list[tuple[str, str, bytes]]:
    """(key, extension, bytes) of every member of a tar, in order; VerificationError for bytes
    that are not a whole tar (a truncated or corrupt shard)."""
    out = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, ext = info.name.partition(".")
                fh = tar.extractfile(info)
                out.append((key, ext, fh.read() if fh else b""))
    except (tarfile.TarError, EOFError) as exc:
        raise VerificationError(f"{where} is not a readable tar ({exc})") from None
    return out


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(shard: Shard, data: bytes) -> list[tuple[int, bytes, int]]:
    """The images of one shard's bytes: (order, image bytes, class), checked against the
    index (size, sha256 and image count); VerificationError naming the shard otherwise."""
    if len(data) != shard.bytes:
        raise VerificationError(
            f"{shard.path}: read {len(data)} bytes, the shard index says {shard.bytes}"
        )
    images: dict[str, bytes] = {}
    classes: dict[str, int] = {}
    for key, ext, body in members(data, shard.path):
        if ext == "cls":
            classes[key] = int(body)
        else:
            images[key] = body
    if len(images) != shard.count or set(images) != set(classes):
        raise VerificationError(
            f"{shard.path}: {len(images)} images and {len(classes)} classes, the index says "
            f"{shard.count} of each"
        )
    return [(int(k), images[k], classes[k]) for k in images]


def check_images(
    shard: Shard, data: bytes, entries: dict[int, ImageEntry], n: int
) -> tuple[int, int]:
    """Split one shard and check each of its images of the first ``n`` against the dataset's
    manifest (bytes and sha256); (images checked, their bytes)."""
    count = total = 0
    for order, body, _ in split(shard, data):
        if order >= n:
            continue
        e = entries[order]
        if len(body) != e.bytes or hashlib.sha256(body).hexdigest() != e.sha256:
            raise VerificationError(
                f"{shard.path}: image {order} ({e.path}) differs from the dataset's manifest"
            )
        count += 1
        total += len(body)
    return count, total
