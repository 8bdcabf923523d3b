"""A dataset's folder: the names in it, making it ready, and writing into it.

A folder holding ``dataset.json`` is an imgread dataset, ours to replace; any other non-empty
folder is refused, so a mistyped --out cannot delete a user's files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from imgread.dataset.manifest import MANIFEST_NAME
from imgread.errors import UserError
from imgread.util import write_bytes_atomic, write_json_atomic

INFO_NAME = "dataset.json"  # marks a folder as an imgread dataset (ours to overwrite)
SKIPPED_NAME = "skipped.csv"
REFUSED_NAME = "refused.csv"  # on_invalid keep: the kept files some decoder refuses, and why
IMAGES_DIR = "images"
SOURCES_NAME = "sources.csv"  # sampled datasets: each image's path in the user's folder

DEFAULT_SEED = 0  # both kinds of dataset: the seed of the choice and the order


def prepare_out_dir(out: Path) -> None:
    """Make ``out`` ready for a new dataset without ever touching a folder that is not ours.

    An empty or missing folder is used as is; a previous imgread dataset (it has dataset.json)
    is replaced; anything else is refused, so a mistyped --out cannot delete a user's files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / INFO_NAME).is_file():
            raise UserError(
                f"--out {out} is not empty and is not an imgread dataset (no {INFO_NAME}); "
                "choose an empty or new folder"
            )
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # first: the old set is no longer valid
        (out / SKIPPED_NAME).unlink(missing_ok=True)
        (out / REFUSED_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def write_info(out: Path, info: dict) -> None:
    """Write ``dataset.json``: what the dataset is and whether it is complete."""
    write_json_atomic(out / INFO_NAME, info, indent=2, newline=False)


def read_info(root: str | os.PathLike) -> dict:
    """A dataset's ``dataset.json`` ({} where it has none)."""
    path = Path(root) / INFO_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def encoding_label(info: dict) -> str:
    """'JPEG q92, 4:2:0, baseline' of a generated dataset's info ('' where not known: a
    sampled dataset keeps its files' own encodings)."""
    if info.get("kind") != "generated":
        return ""
    fmt = info.get("format", "jpeg")
    q = info.get(f"{fmt}_quality")
    text = fmt.upper() + (f" q{q}" if q is not None and fmt != "png" else "")
    if fmt == "jpeg":
        text += f", {info.get('subsampling', '4:2:0')}"
        text += ", progressive" if info.get("progressive") else ", baseline"
    return text


def write_image(dest: Path, data: bytes) -> None:
    """Write one image atomically; an OSError names the image (a full disk often does not)."""
    try:
        write_bytes_atomic(dest, data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from None


def write_failed(exc: OSError, out: Path) -> UserError:
    """The UserError for a failed write into ``out``, with a hint where the disk is full."""
    where = exc.filename or out
    hint = "free some space or choose another --out" if exc.errno == errno.ENOSPC else ""
    return UserError(
        f"could not write {where}: {exc.strerror or exc}" + (f"; {hint}" if hint else "")
    )
