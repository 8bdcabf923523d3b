"""Every decoder against Pillow, on generated images and on the messy folder's real files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from imgread import allocator
from imgread.dataset import GenerateParams, generate
from imgread.decoders import (
    CROP,
    DECODERS,
    checksum,
    get_decoder,
    output_shape,
    reserve,
    resize_crop,
    resize_target,
)
from imgread.errors import ImageDecodeError, VerificationError
from imgread.manifest import read_manifest

from .helpers import make_messy_folder

FULL_TOLERANCE = 2.0  # mean absolute difference from Pillow at full size, in levels
# At 224 the reduced-DCT decoders scale inside the IDCT while Pillow decodes fully and then
# resizes: a different (equally valid) downscale, so the tolerance is wider.
CROP_TOLERANCE = 6.0


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def photo_like(tmp_path_factory):
    """A generated 1024 x 768 photo-like JPEG (the project's own generator)."""
    out = tmp_path_factory.mktemp("dec") / "ds"
    m = read_manifest(
        generate(
            out,
            GenerateParams(count=2, width=1024, height=768, target_bytes=250_000),
            progress=False,
        )
    )
    return [str(m.root / e.path) for e in m.entries]


@pytest.fixture(scope="module")
def messy_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    kinds = make_messy_folder(root)
    (root / "locked.jpg").chmod(0o644)
    return {rel: str(root / rel) for rel, kind in kinds.items() if kind in ("valid", "png")}


@pytest.mark.parametrize("name", list(DECODERS))
def test_every_decoder_matches_pillow_on_generated_images(photo_like, name):
    d = get_decoder(name)
    for path in photo_like:
        ref_full = DECODERS["pillow"].decode(path, "full")
        full = d.decode(path, "full")
        assert full.shape == ref_full.shape == (768, 1024, 3) and full.dtype == np.uint8
        assert _mad(full, ref_full) <= FULL_TOLERANCE
        crop = d.decode(path, "crop224")
        assert crop.shape == (CROP, CROP, 3) and crop.flags["C_CONTIGUOUS"]
        assert _mad(crop, DECODERS["pillow"].decode(path, "crop224")) <= CROP_TOLERANCE
        # from bytes in memory: the same pixels as from the path
        with open(path, "rb") as fh:
            assert checksum(d.decode(fh.read(), "full")) == checksum(full)


@pytest.mark.parametrize("name", list(DECODERS))
def test_every_decoder_on_real_files_greyscale_cmyk_progressive_rotated(messy_files, name):
    d = get_decoder(name)
    for rel, path in messy_files.items():
        if rel.endswith(".png") and d.jpeg_only:
            with pytest.raises(ImageDecodeError, match=f"decoder {name}: .*not a JPEG"):
                d.decode(path, "full")
            continue
        with Image.open(path) as img:
            size = img.size  # the stored grid: EXIF orientation is not applied by any decoder
        full = d.decode(path, "full")
        assert full.shape == (size[1], size[0], 3), rel
        assert _mad(full, DECODERS["pillow"].decode(path, "full")) <= FULL_TOLERANCE, rel
        assert d.decode(path, "crop224").shape == (CROP, CROP, 3)
        assert d.count(path, "full") == size[0] * size[1]


def test_exif_orientation_is_not_applied_by_any_decoder(messy_files):
    path = messy_files["rotated.jpg"]
    with Image.open(path) as img:
        assert img.getexif().get(0x0112) == 6 and img.size == (64, 48)
    assert {DECODERS[n].decode(path, "full").shape for n in DECODERS} == {(48, 64, 3)}


def test_a_decoder_that_returns_garbage_is_caught_by_the_checksum(photo_like):
    good = DECODERS["simplejpeg"].decode(photo_like[0], "full")
    bad = good.copy()
    bad[100, 100, 0] ^= 1
    assert checksum(bad) != checksum(good) and checksum(good.copy()) == checksum(good)


def test_resize_crop_is_the_imagenet_evaluation_transform():
    assert resize_target(4032, 3024) == (341, 256)
    assert resize_target(3024, 4032) == (256, 341)
    assert output_shape(4032, 3024, "full") == (3024, 4032, 3)
    assert output_shape(4032, 3024, "crop224") == (224, 224, 3)
    # a gradient: the centre crop keeps the middle columns
    x = np.tile(np.arange(512, dtype=np.float32) / 2, (384, 1)).astype(np.uint8)
    rgb = np.dstack([x, x, x])
    out = resize_crop(rgb)
    assert out.shape == (224, 224, 3)
    # 512x384 -> 341x256, crop columns 58..282 of 341 = source 87..423 of 512 -> values ~44..211
    assert 40 <= out[0, 0, 0] <= 48 and 207 <= out[0, -1, 0] <= 215


def test_reduced_decoders_really_decode_at_a_smaller_scale(monkeypatch, photo_like):
    """opencv asks for the largest reduction covering 256 (1024x768 -> /2 = 512x384)."""
    seen = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: seen.append(flags) or real(buf, flags))
    DECODERS["opencv"].decode(photo_like[0], "crop224")
    assert seen == [cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION]


def test_bad_data_names_the_file_and_the_decoder(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    for name, d in DECODERS.items():
        with pytest.raises(ImageDecodeError, match=f"{bad}: decoder {name}: "):
            d.decode(str(bad), "full")


def test_cli_lists_every_decoder_with_its_version():
    r = subprocess.run(
        [sys.executable, "-m", "imgread", "decoders"], capture_output=True, text=True, check=True
    )
    for name in DECODERS:
        assert f"\n{name} " in "\n" + r.stdout
    assert f"opencv {cv2.__version__}" in r.stdout
    assert f"simplejpeg {simplejpeg.__version__}" in r.stdout
    assert "libjpeg-turbo" in r.stdout


def test_png_and_jpeg_bytes_in_memory():
    buf = io.BytesIO()
    Image.new("RGB", (300, 280), (10, 200, 30)).save(buf, format="PNG")
    for name in ("pillow", "pillow-draft", "opencv"):
        out = DECODERS[name].decode(buf.getvalue(), "crop224")
        assert out.shape == (224, 224, 3) and tuple(out[5, 5]) == (10, 200, 30)


@pytest.mark.parametrize("name", list(DECODERS))
def test_decode_into_writes_the_decode_pixels_into_a_slot_of_a_larger_buffer(
    photo_like, messy_files, name
):
    d = get_decoder(name)
    paths = photo_like + [p for rel, p in messy_files.items() if not rel.endswith(".png")]
    for path in paths:
        for output in ("full", "crop224"):
            want = d.decode(path, output)
            block = np.full(want.size + 64, 7, np.uint8)  # a slot between others' bytes
            slot = np.ndarray(want.shape, np.uint8, buffer=block, offset=32)
            d.decode_into(path, output, slot)
            assert checksum(slot) == checksum(want), (path, output)
            assert (block[:32] == 7).all() and (block[-32:] == 7).all()


def test_decode_into_refuses_a_slot_of_another_shape_and_names_bad_data(photo_like, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    for name, d in DECODERS.items():
        with pytest.raises(VerificationError, match=r"decoded \(768, 1024, 3\), expected"):
            d.decode_into(photo_like[0], "full", np.empty((10, 10, 3), np.uint8))
        with pytest.raises(ImageDecodeError, match=f"{bad}: decoder {name}: "):
            d.decode_into(str(bad), "full", np.empty((768, 1024, 3), np.uint8))


def test_pillow_decodes_into_its_reused_scratch_without_a_new_array(photo_like, monkeypatch):
    """The one copy is the RGBX -> RGB pack: no convert(), no numpy array of the image."""
    from PIL import Image as PILImage

    reserve("pillow", "full", [(768, 1024, 3)])
    calls = []
    monkeypatch.setattr(PILImage.Image, "convert", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(np, "asarray", lambda *a, **k: calls.append(a))
    out = np.empty((768, 1024, 3), np.uint8)
    DECODERS["pillow"].decode_into(photo_like[0], "full", out)
    assert not calls
    monkeypatch.undo()
    assert checksum(out) == checksum(DECODERS["pillow"].decode(photo_like[0], "full"))


_ALLOCATOR_PROBE = """
import json
from imgread import allocator
before = allocator.state()
allocator.apply("tuned")
tuned = allocator.state()
allocator.apply("default")
print(json.dumps([before, tuned, allocator.state(), allocator.settings()]))
"""


def test_the_tuned_allocator_sets_pillows_block_cache_and_glibc_and_default_restores_pillow():
    # in a process of its own: glibc's settings cannot be undone in this one
    r = subprocess.run(
        [sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True
    )
    before, tuned, after, settings = json.loads(r.stdout)
    assert before["pillow_blocks_max"] == 0 and after["pillow_blocks_max"] == 0
    assert tuned["pillow_blocks_max"] == allocator.PILLOW_BLOCKS_MAX
    if os.confstr("CS_GNU_LIBC_VERSION"):
        assert tuned["glibc"] == {"mmap_max": 0, "trim_threshold": allocator.GLIBC_TRIM_THRESHOLD}
        assert "glibc mmap_max=0" in settings
