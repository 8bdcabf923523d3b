"""The decoder sandbox and the fuzz run: a crash, a hang or a memory hog in a decoder is
reported against exactly the file that caused it, the process that asked lives on, and a seeded
sample of mutated files gets a judgement from every decoder."""

from __future__ import annotations

import csv
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgread.decoders import fuzz
from imgread.decoders.registry import installed
from imgread.decoders.sandbox import BAD, check_files, summary

from ..support.helpers import ROOT

TOY = "tests.support.toys.crashy:decode"
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
STATUSES = {"ok", "unsupported", "unavailable", *BAD}


def _jpeg(path: Path, comment: bytes = b"", size=(32, 24)) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    if comment:  # a COM segment after SOI: the file stays a valid JPEG holding the marker
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    path.write_bytes(data)
    return path


def test_a_crashing_decoder_is_blamed_on_its_file_and_the_next_file_still_decodes(tmp_path):
    files = [
        _jpeg(tmp_path / "a.jpg"),
        _jpeg(tmp_path / "segv.jpg", b"SEGV"),
        _jpeg(tmp_path / "b.jpg"),
        _jpeg(tmp_path / "abrt.jpg", b"ABRT"),
        _jpeg(tmp_path / "hang.jpg", b"HANG"),
        _jpeg(tmp_path / "c.jpg"),
    ]
    outcomes = check_files(files, [TOY], timeout_s=3, memory_bytes=1 << 30, env=ENV)
    got = {Path(o.path).name: o for o in outcomes}
    assert [Path(o.path).name for o in outcomes] == [f.name for f in files]
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        assert got[name].status == "ok" and got[name].size == (32, 24), got[name]
    assert got["segv.jpg"].status == "crashed" and "SIGSEGV" in got["segv.jpg"].message
    assert got["abrt.jpg"].status == "crashed" and "SIGABRT" in got["abrt.jpg"].message
    assert got["hang.jpg"].status == "timeout"
    for o in outcomes:
        assert o.bad == (o.status != "ok")
        if o.bad:
            assert o.path in o.message  # every refusal names its file


def test_a_memory_hog_meets_the_memory_limit_not_the_time_limit(tmp_path):
    # its own time limit, far above what filling the cap takes: on a loaded CI machine touching
    # a gigabyte once took longer than the 3 s the hang above is given
    files = [_jpeg(tmp_path / "hog.jpg", b"HOG"), _jpeg(tmp_path / "after.jpg")]
    outcomes = check_files(files, [TOY], timeout_s=120, memory_bytes=512 << 20, env=ENV)
    hog, after = outcomes
    assert hog.status in ("out-of-memory", "crashed"), hog
    assert hog.path in hog.message
    assert after.status == "ok" and after.size == (32, 24), after


def test_the_pixel_cap_refuses_before_decoding(tmp_path):
    # a real 64x64 PNG whose IHDR (CRC made right) claims 30000 x 30000 pixels
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    big = tmp_path / "big.png"
    big.write_bytes(bytes(data))
    small = _jpeg(tmp_path / "small.jpg")
    outcomes = check_files([big, small], ["pillow"], max_pixels=10_000_000)
    assert [o.status for o in outcomes] == ["too-large", "ok"]
    assert "900000000 pixels" in outcomes[0].message


def test_a_seeded_fuzz_sample_is_judged_by_every_decoder(tmp_path):
    names = installed()
    assert "pillow" in names
    count = 45  # three formats x five mutations, three times over
    outcomes = fuzz.run(tmp_path, count, 7, names, timeout_s=10, memory_bytes=2 << 30)
    assert len(outcomes) == count * len(names)
    assert {o.status for o in outcomes} <= STATUSES
    by = summary(outcomes)
    assert set(by) == set(names)
    for name, counts in by.items():
        assert sum(counts.values()) == count, name
        assert counts.get("refused", 0) > 0, f"{name} refused none of {count} mutated files"
    for o in outcomes:
        if o.bad:
            assert o.path in o.message, o
    with open(tmp_path / "outcomes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == count * len(names)
    assert {r["mutation"] for r in rows} == set(fuzz.MUTATIONS)
    assert {r["format"] for r in rows} == set(fuzz.FORMATS)
    # the same seed makes the same files: a failing file can be made again
    again = fuzz.make_files(tmp_path / "again", count, 7)
    for path, _, _ in again:
        assert path.read_bytes() == (tmp_path / "files" / path.name).read_bytes()


@pytest.mark.parametrize("fmt", fuzz.FORMATS)
def test_the_unmutated_seeds_decode_to_their_pixels(tmp_path, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"seed{fuzz.SUFFIX[fmt]}"
    path.write_bytes(
        fuzz.seed_image(fmt, rng, quality=95) if fmt != "png" else fuzz.seed_image(fmt, rng)
    )
    outcomes = check_files([path], ["pillow"])
    assert outcomes[0].status == "ok" and outcomes[0].message == "64x48"


def test_every_mutation_changes_the_file_and_an_unknown_one_is_refused():
    rng = np.random.default_rng(1)
    for fmt in fuzz.FORMATS:
        base = fuzz.seed_image(fmt, rng)
        for how in fuzz.MUTATIONS:
            assert fuzz.mutate(base, fmt, how, np.random.default_rng(3)) != base, (fmt, how)
    with pytest.raises(ValueError, match="unknown mutation 'melt'"):
        fuzz.mutate(b"x", "jpeg", "melt", rng)
