"""Hostile files, fuzzed: seeded mutations of small JPEG, PNG and WebP files, each decoded by
every decoder in the sandbox (:mod:`imgread.decoders.sandbox`), so that a file is decoded or
refused with an error naming it, within bounded time and memory, and no crash takes down the
process that asked.

``python -m imgread.decoders.fuzz --files 2000 --seed 0 --out results/fuzz`` (``make fuzz``)
writes every file tried and ``outcomes.csv``, and prints the outcomes per decoder. The mutations
(each seeded by the run's seed and the file's number, so a file can be made again):

- ``truncate``: the file cut at a random offset;
- ``bitflip``: 1 to 8 random bits flipped;
- ``header``: the size fields of the header (JPEG SOF, PNG IHDR with its CRC made right again,
  WebP's VP8/VP8L/VP8X) set to 0, 1, 65535 or a random value;
- ``extreme``: a valid image 1 pixel wide or tall, or as wide as the format allows in little data;
- ``garbage``: the format's magic bytes followed by random bytes, or an empty file.
"""

from __future__ import annotations

import argparse
import csv
import io
import struct
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from imgread.decoders.sandbox import as_rows, check_files, summary

MUTATIONS = ("truncate", "bitflip", "header", "extreme", "garbage")
FORMATS = ("jpeg", "png", "webp")
SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def seed_image(fmt: str, rng: np.random.Generator, size=(64, 48), **save) -> bytes:
    """A small image of smooth colour and noise, encoded as ``fmt``."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt], **save)
    return buf.getvalue()


def _size_fields(data: bytes, fmt: str) -> list[tuple[int, str]]:
    """(offset, struct format) of the header's width/height fields."""
    if fmt == "jpeg":
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
            at = data.find(marker)
            if at >= 0:
                return [(at + 5, ">H"), (at + 7, ">H")]  # height, width
        return []
    if fmt == "png":
        return [(16, ">I"), (20, ">I")]  # IHDR width, height
    at = data.find(b"VP8 ")
    if at >= 0:
        return [(at + 14, "<H"), (at + 16, "<H")]
    at = data.find(b"VP8X")
    return [(at + 12, "<I"), (at + 15, "<I")] if at >= 0 else []


def _header(data: bytes, fmt: str, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for offset, code in _size_fields(data, fmt):
        bits = struct.calcsize(code) * 8
        value = int(rng.choice([0, 1, 65535, int(rng.integers(0, 1 << min(bits, 31)))]))
        value &= (1 << bits) - 1
        if code.endswith("I") and offset + 4 > len(out):
            continue
        if fmt == "webp" and "VP8X" in out[:40].decode("latin-1") and code == "<I":
            out[offset : offset + 3] = (value & 0xFFFFFF).to_bytes(3, "little")
            continue
        out[offset : offset + struct.calcsize(code)] = struct.pack(code, value)
    if fmt == "png":  # the IHDR's CRC made right, so the decoder reads the sizes
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


def mutate(data: bytes, fmt: str, how: str, rng: np.random.Generator) -> bytes:
    """``data`` (a valid ``fmt`` file) mutated by ``how`` (one of MUTATIONS)."""
    if how == "truncate":
        return data[: int(rng.integers(1, len(data)))]
    if how == "bitflip":
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, len(out)))
            out[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(out)
    if how == "header":
        return _header(data, fmt, rng)
    if how == "extreme":
        size = [(1, 1), (1, 2000), (2000, 1), (16383 if fmt == "webp" else 8000, 2)][
            int(rng.integers(0, 4))
        ]
        return seed_image(fmt, rng, size)
    if how == "garbage":
        if rng.integers(0, 4) == 0:
            return b""
        return data[:8] + rng.integers(0, 256, int(rng.integers(1, 4096)), np.uint8).tobytes()
    raise ValueError(f"unknown mutation {how!r}; choose one of {', '.join(MUTATIONS)}")


def make_files(out: Path, count: int, seed: int) -> list[tuple[Path, str, str]]:
    """``count`` mutated files in ``out``: [(path, format, mutation)], seeded."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for fmt in FORMATS:
        rng = np.random.default_rng([seed, 1, FORMATS.index(fmt)])
        seeds[fmt] = [seed_image(fmt, rng, quality=85)]
        if fmt == "jpeg":
            seeds[fmt].append(seed_image(fmt, rng, progressive=True, quality=90))
    made = []
    for i in range(count):
        rng = np.random.default_rng([seed, 2, i])
        fmt = FORMATS[i % len(FORMATS)]
        how = MUTATIONS[(i // len(FORMATS)) % len(MUTATIONS)]
        base = seeds[fmt][int(rng.integers(0, len(seeds[fmt])))]
        path = out / f"{i:05d}-{how}{SUFFIX[fmt]}"
        path.write_bytes(mutate(base, fmt, how, rng))
        made.append((path, fmt, how))
    return made


# The libraries the DataLoader's peers decode with, each as its pipeline does it to one file
# (name=module:function; the sandbox imports the function in its child): make fuzz tries them
# beside the registry's decoders.
PIPELINE_DECODERS = (
    "torchvision-io=imgread.phases.dataloader.pipelines.torchvision_io:fuzz_decode",
    "tf-data=imgread.phases.dataloader.pipelines.tf_data:fuzz_decode",
    "dali-cpu=imgread.phases.dataloader.pipelines.dali_cpu:fuzz_decode",
)


def _named(decoders) -> dict[str, str]:
    """{what the sandbox calls: the name outcomes carry} of registry names and
    ``name=module:function`` entries."""
    out = {}
    for d in decoders:
        name, sep, target = d.partition("=")
        out[target if sep else name] = name
    return out


def run(out: Path, count: int, seed: int, decoders, timeout_s: float, memory_bytes: int):
    """Make the files, decode each with every decoder in the sandbox, write outcomes.csv."""
    files = make_files(out / "files", count, seed)
    names = _named(decoders)
    outcomes = check_files(
        [p for p, _, _ in files], list(names), timeout_s=timeout_s, memory_bytes=memory_bytes
    )
    outcomes = [replace(o, decoder=names[o.decoder]) for o in outcomes]
    kinds = {str(p): (fmt, how) for p, fmt, how in files}
    with open(out / "outcomes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(
            fh, ["path", "format", "mutation", "decoder", "status", "message", "size"]
        )
        w.writeheader()
        for row in as_rows(outcomes):
            fmt, how = kinds[row["path"]]
            w.writerow({**row, "format": fmt, "mutation": how})
    return outcomes


def main(argv=None) -> int:
    """The fuzz run as a command: prints outcomes per decoder; exit 1 if a file went unjudged."""
    from imgread.decoders.registry import installed

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoders", default=",".join(installed()))
    p.add_argument(
        "--pipelines", action="store_true", help="also the peers' own decoders (PIPELINE_DECODERS)"
    )
    p.add_argument("--out", default="results/fuzz")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--memory-mb", type=int, default=4096)
    a = p.parse_args(argv)
    decoders = [d for d in a.decoders.split(",") if d]
    decoders += list(PIPELINE_DECODERS) if a.pipelines else []
    outcomes = run(Path(a.out), a.files, a.seed, decoders, a.timeout, a.memory_mb << 20)
    print(f"{a.files} files x {len(decoders)} decoders (seed {a.seed}) -> {a.out}/outcomes.csv")
    for name, counts in summary(outcomes).items():
        print(f"  {name:<14} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0 if len(outcomes) == a.files * len(decoders) else 1


if __name__ == "__main__":
    sys.exit(main())
