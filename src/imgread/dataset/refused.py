"""The kept images some decoder refuses (a sampled dataset made with ``on_invalid: keep``,
listed in refused.csv): which cells they leave out, and the one line that says so.

A cell whose decoder refuses any of its n images is not measured: its trial writes a skip
record with :func:`refusal_line` in place of a measurement (the answer and the report show the
line), and the decoder's reference and decoded-cache jobs write what they can without it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from imgread.dataset.folder import REFUSED_NAME
from imgread.dataset.manifest import read_manifest


def read_refused(root: str | Path) -> dict[str, dict[str, str]]:
    """{decoder: {image path in the dataset: its message}}; {} where nothing was refused."""
    path = Path(root) / REFUSED_NAME
    if not path.is_file():
        return {}
    out: dict[str, dict[str, str]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["decoder"], {})[row["path"]] = row["reason"]
    return out


def refusal_line(root: str | Path, paths: list[str], decoder: str, dataset: str) -> str | None:
    """The line that leaves out a cell of ``decoder`` over ``paths`` (dataset-relative), or
    None where the decoder reads all of them."""
    mine = read_refused(root).get(decoder, {})
    hit = [p for p in paths if p in mine]
    if not hit:
        return None
    return (
        f"decoder {decoder} on dataset {dataset} not measured: it refuses {len(hit)} of the "
        f"{len(paths)} images its cells read (kept by on_invalid keep; {REFUSED_NAME}), e.g. "
        f"{hit[0]}: {mine[hit[0]]}"
    )


def cell_refusal(manifest: str | Path, n: int, decoder: str, dataset: str) -> str | None:
    """:func:`refusal_line` of a cell of ``decoder`` over the manifest's first ``n`` images;
    the manifest is read only where the dataset lists refusals."""
    root = Path(manifest).parent
    if not read_refused(root).get(decoder):
        return None
    paths = [e.path for e in read_manifest(manifest).subset(n)]
    return refusal_line(root, paths, decoder, dataset)
