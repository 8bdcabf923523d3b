"""Reference checksums: each image decoded sequentially by one decoder to one output, as
(shape, CRC-32) per image. A trial that hands pixels back (decode with delivery pixels, the
DataLoader, the stream) checks every delivered array against them after the clock."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from imgread.decoders import checksum, get_decoder
from imgread.errors import UserError
from imgread.util import write_text_atomic


def reference_checksums(
    root: Path, entries, decoder: str, output: str
) -> dict[str, tuple[tuple, int]]:
    """{path: (shape, crc32)} of each image decoded sequentially by ``decoder`` to ``output``."""
    d = get_decoder(decoder)
    out = {}
    for e in entries:
        path = str(root / e.path)
        rgb = d.decode(path, output)
        out[path] = (rgb.shape, checksum(rgb))
    return out


def write_reference(dest, root: Path, entries, decoder: str, output: str) -> None:
    """Write the reference checksums as CSV (path relative to the dataset, shape, crc32)."""
    ref = reference_checksums(root, entries, decoder, output)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "height", "width", "crc32", "decoder", "output"])
    for e in entries:
        shape, crc = ref[str(root / e.path)]
        w.writerow([e.path, shape[0], shape[1], crc, decoder, output])
    write_text_atomic(dest, buf.getvalue())


def read_reference(path, root: Path, decoder: str, output: str) -> dict[str, tuple[tuple, int]]:
    """Read a reference CSV written by :func:`write_reference` for this decoder and output."""
    out = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if (row["decoder"], row["output"]) != (decoder, output):
                raise UserError(
                    f"{path}: reference of {row['decoder']}/{row['output']}, not {decoder}/{output}"
                )
            shape = (int(row["height"]), int(row["width"]), 3)
            out[str(root / row["path"])] = (shape, int(row["crc32"]))
    return out
