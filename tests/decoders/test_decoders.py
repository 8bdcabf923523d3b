"""Every decoder against Pillow, on generated images and on the messy folder's real files; the
formats each declares (PNG, WebP, AVIF made here), format sniffing, and turbojpeg's own paths
(scale-on-decode, decode_into, strict errors, a missing library)."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from imgread import decoders as decoders_module
from imgread.cli import decoders as decoders_cli
from imgread.dataset import GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.decoders import (
    CROP,
    DECODERS,
    FORMATS,
    TURBOJPEG_PIN,
    DecoderUnavailable,
    UnsupportedFormatError,
    allocator,
    can_decode,
    checksum,
    format_of,
    get_decoder,
    output_shape,
    reserve,
    resize_crop,
    resize_target,
    warm_up,
)
from imgread.decoders import turbojpeg as turbojpeg_module
from imgread.errors import ImageDecodeError, UserError, VerificationError

from ..support.helpers import make_messy_folder

FULL_TOLERANCE = 2.0  # mean absolute difference from Pillow at full size, in levels
# At 224 the reduced-DCT decoders scale inside the IDCT while Pillow decodes fully and then
# resizes: a different (equally valid) downscale, so the tolerance is wider.
CROP_TOLERANCE = 6.0


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _usable(name: str):
    """The decoder as a test parameter, skipped (saying why) where its library is missing."""
    why = DECODERS[name].missing()
    return pytest.param(name, marks=pytest.mark.skipif(why is not None, reason=why or ""))


USABLE = [_usable(name) for name in DECODERS]


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


@pytest.mark.parametrize("name", USABLE)
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


@pytest.mark.parametrize("name", USABLE)
def test_every_decoder_on_real_files_greyscale_cmyk_progressive_rotated(messy_files, name):
    d = get_decoder(name)
    for rel, path in messy_files.items():
        if rel.endswith(".png") and "png" not in d.formats:
            with pytest.raises(ImageDecodeError, match=f"decoder {name}: format png is not one"):
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
    usable = [n for n, d in DECODERS.items() if d.available]
    assert {DECODERS[n].decode(path, "full").shape for n in usable} == {(48, 64, 3)}


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
        if d.available:
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
    assert "\n              formats: jpeg\n" in r.stdout  # simplejpeg, turbojpeg
    assert "AVIF: this Pillow" in r.stdout


def test_png_and_jpeg_bytes_in_memory():
    colour = (10, 200, 30)
    for fmt, names in (
        ("PNG", ("pillow", "pillow-draft", "opencv")),
        ("JPEG", ("pillow", "pillow-draft", "opencv", "simplejpeg", "turbojpeg")),
    ):
        buf = io.BytesIO()
        Image.new("RGB", (300, 280), colour).save(buf, format=fmt, quality=95)
        data = buf.getvalue()
        assert data.startswith(b"\x89PNG" if fmt == "PNG" else b"\xff\xd8")  # bytes, no file
        for name in names:
            if not DECODERS[name].available:
                continue
            for output, shape in (("crop224", (224, 224, 3)), ("full", (280, 300, 3))):
                out = DECODERS[name].decode(data, output)
                assert out.shape == shape, (fmt, name, output)
                got = out[5, 5].astype(int)
                if fmt == "PNG":  # lossless: the exact colour
                    assert tuple(got) == colour, (name, output)
                else:  # lossy: within a few levels of it
                    assert np.abs(got - colour).max() <= 4, (name, output, tuple(got))


@pytest.mark.parametrize("name", USABLE)
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
        if not d.available:
            continue
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
from imgread.decoders import allocator
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


# --------------------------------------------------------------------------- formats


def _source_rgb(width: int = 300, height: int = 260) -> np.ndarray:
    """Gradients and noise: exact through lossless codecs, not flat for lossy ones."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 255, width)
    y = np.linspace(0, 255, height)
    return np.dstack(
        [np.tile(x, (height, 1)), np.tile(y[:, None], (1, width)), rng.random((height, width)) * 60]
    ).astype(np.uint8)


# (format, Pillow's save arguments, lossless)
ENCODINGS = {
    "png": ("PNG", {}, True),
    "webp-lossless": ("WEBP", {"lossless": True}, True),
    "webp": ("WEBP", {"quality": 90}, False),
    "avif": ("AVIF", {"quality": 90}, False),
}


@pytest.fixture(scope="module")
def encoded():
    """{encoding: bytes} of the same small image, for every encoding this Pillow writes."""
    Image.init()
    out = {}
    for key, (pil, kw, _) in ENCODINGS.items():
        if pil in Image.SAVE:
            buf = io.BytesIO()
            Image.fromarray(_source_rgb()).save(buf, pil, **kw)
            out[key] = buf.getvalue()
    return out


def _declared_cells():
    """(decoder, encoding) for every non-JPEG format each decoder declares here."""
    return [
        pytest.param(name, key, marks=_usable(name).marks, id=f"{name}-{key}")
        for name, d in DECODERS.items()
        for key in ENCODINGS
        if key.split("-")[0] in d.formats
    ]


@pytest.mark.parametrize(("name", "key"), _declared_cells())
def test_every_declared_format_decodes_to_pillows_pixels(encoded, name, key):
    if key not in encoded:
        pytest.skip(f"this Pillow cannot write {key} to make the test image")
    data, lossless = encoded[key], ENCODINGS[key][2]
    d = get_decoder(name)
    ref = DECODERS["pillow"].decode(data, "full")
    full = d.decode(data, "full")
    assert full.shape == (260, 300, 3) and full.dtype == np.uint8
    if lossless:  # exact: the source's pixels, whoever decodes
        assert np.array_equal(full, _source_rgb()) and np.array_equal(full, ref)
    else:
        assert _mad(full, ref) <= FULL_TOLERANCE
    crop = d.decode(data, "crop224")
    assert crop.shape == (CROP, CROP, 3) and crop.flags["C_CONTIGUOUS"]
    assert _mad(crop, DECODERS["pillow"].decode(data, "crop224")) <= CROP_TOLERANCE
    slot = np.empty_like(full)
    d.decode_into(data, "full", slot)
    assert checksum(slot) == checksum(full)
    assert d.count(data, "full") == 300 * 260


def test_a_format_a_decoder_does_not_declare_is_refused_naming_decoder_and_format(
    encoded, tmp_path
):
    gif = tmp_path / "a.gif"
    Image.fromarray(_source_rgb(40, 30)).save(gif, "GIF")
    refused = 0
    for name, d in DECODERS.items():
        if not d.available:
            continue
        for key, data in encoded.items():
            fmt = key.split("-")[0]
            if fmt in d.formats:
                continue
            for call, args in ((d.decode, (data, "crop224")), (d.count, (data,))):
                with pytest.raises(
                    UnsupportedFormatError, match=f"decoder {name}: format {fmt} is not one"
                ) as err:
                    call(*args)
                assert err.value.fmt == fmt and isinstance(err.value, ImageDecodeError)
            with pytest.raises(UnsupportedFormatError, match=f"decoder {name}: format {fmt}"):
                d.decode_into(data, "full", np.empty((260, 300, 3), np.uint8))
            refused += 1
            # as a pool's worker sends it back
            back = pickle.loads(pickle.dumps(err.value))
            assert (type(back), str(back), back.fmt) == (type(err.value), str(err.value), fmt)
        # a format outside FORMATS: refused by all, Pillow (which could) included
        with pytest.raises(UnsupportedFormatError, match=f"{gif}: decoder {name}: .*format"):
            d.decode(str(gif), "full")
    assert refused >= 4  # simplejpeg and turbojpeg: png and webp at least


def test_format_of_sniffs_each_format_from_bytes_and_paths(encoded, tmp_path, photo_like):
    assert format_of(photo_like[0]) == "jpeg"
    with open(photo_like[0], "rb") as fh:
        assert format_of(fh.read()) == "jpeg"
    for key, data in encoded.items():
        fmt = key.split("-")[0]
        assert format_of(data) == fmt and format_of(memoryview(data)) == fmt
        path = tmp_path / f"x.{key}"
        path.write_bytes(data)
        assert format_of(path) == fmt and format_of(str(path)) == fmt
    # an AVIF whose major brand is mif1: avif among the compatible brands
    assert format_of(b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf") == "avif"
    assert format_of(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "unknown"
    for other in (b"", b"GIF89a....", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"not an image"):
        assert format_of(other) == "unknown"


def test_can_decode_follows_the_declared_formats():
    for name, d in DECODERS.items():
        assert d.formats <= set(FORMATS) and "jpeg" in d.formats
        for fmt in FORMATS:
            assert can_decode(name, fmt) == (fmt in d.formats)
        assert not can_decode(name, "unknown")
    assert not can_decode("simplejpeg", "png") and not can_decode("turbojpeg", "webp")
    assert can_decode("pillow", "png") and can_decode("opencv", "webp")
    with pytest.raises(ValueError, match="unknown format 'gif'"):
        can_decode("pillow", "gif")
    with pytest.raises(ValueError, match="unknown decoder 'nope'"):
        can_decode("nope", "jpeg")


# --------------------------------------------------------------------------- turbojpeg

needs_turbojpeg = pytest.mark.skipif(
    not DECODERS["turbojpeg"].available, reason=DECODERS["turbojpeg"].missing() or ""
)


@needs_turbojpeg
def test_turbojpeg_matches_pillow_full_crop_and_into(photo_like):
    d = DECODERS["turbojpeg"]
    for path in photo_like:
        ref = DECODERS["pillow"].decode(path, "full")
        full = d.decode(path, "full")
        assert full.shape == ref.shape and _mad(full, ref) <= FULL_TOLERANCE
        crop = d.decode(path, "crop224")
        assert _mad(crop, DECODERS["pillow"].decode(path, "crop224")) <= CROP_TOLERANCE
        out = np.empty_like(ref)
        d.decode_into(path, "full", out)
        assert checksum(out) == checksum(full)


@needs_turbojpeg
def test_turbojpeg_decodes_straight_into_the_slot_at_the_smallest_covering_scale(
    photo_like, monkeypatch
):
    tj = turbojpeg_module._turbojpeg()
    assert turbojpeg_module._tj_scaling(tj, 4032, 3024) == (1, 8)  # 504 x 378 covers 341 x 256
    assert turbojpeg_module._tj_scaling(tj, 1024, 768) == (3, 8)  # 384 x 288
    assert turbojpeg_module._tj_scaling(tj, 300, 260) is None
    seen = []
    real = type(tj).decode
    monkeypatch.setattr(type(tj), "decode", lambda self, *a: seen.append(a) or real(self, *a))
    DECODERS["turbojpeg"].decode(photo_like[0], "crop224")
    assert seen[-1][2] == (3, 8)
    out = np.empty((768, 1024, 3), np.uint8)
    DECODERS["turbojpeg"].decode_into(photo_like[0], "full", out)
    assert seen[-1][4] is out  # the library's destination is the slot itself
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("an array was allocated"))
    DECODERS["turbojpeg"].decode_into(photo_like[0], "full", out)


@needs_turbojpeg
def test_turbojpeg_is_strict_on_a_truncated_file_and_safe_in_threads(photo_like, tmp_path):
    with open(photo_like[0], "rb") as fh:
        data = fh.read()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=f"{cut}: decoder turbojpeg: OSError: "):
        DECODERS["turbojpeg"].decode(str(cut), "full")
    want = checksum(DECODERS["turbojpeg"].decode(data, "crop224"))
    got = []

    def work():
        got.extend(checksum(DECODERS["turbojpeg"].decode(data, "crop224")) for _ in range(3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 12


def _without_turbojpeg(monkeypatch, how: str) -> None:
    """This process as if PyTurboJPEG, or the library under it, were not installed."""
    monkeypatch.setattr(turbojpeg_module, "_TJ", None)
    if how == "package":
        monkeypatch.setitem(sys.modules, "turbojpeg", None)  # import turbojpeg: ImportError
        return
    turbojpeg = pytest.importorskip("turbojpeg")

    def no_library(self, lib_path=None):
        raise RuntimeError(
            "Unable to locate turbojpeg library automatically. You may specify the turbojpeg "
            "library path manually.\ne.g. jpeg = TurboJPEG(lib_path)"
        )

    monkeypatch.setattr(turbojpeg.TurboJPEG, "__init__", no_library)


@pytest.mark.parametrize("how", ["package", "library"])
def test_turbojpeg_missing_is_one_clear_line_not_a_crash(monkeypatch, capsys, how):
    _without_turbojpeg(monkeypatch, how)
    d = DECODERS["turbojpeg"]
    why = d.missing()
    assert why is not None and "\n" not in why and not d.available
    assert why.startswith("decoder turbojpeg is unavailable: ")
    if how == "package":
        assert "PyTurboJPEG is not installed" in why and f"pip install {TURBOJPEG_PIN}" in why
    else:
        assert "Unable to locate turbojpeg library" in why and "apt install libturbojpeg0" in why
    assert decoders_module.missing() == {"turbojpeg": why}
    assert d.version() == f"unavailable ({why})"
    assert can_decode("turbojpeg", "jpeg")  # what it declares; availability is missing()
    for call in (
        lambda: warm_up("turbojpeg", "full"),
        lambda: d.decode(b"\xff\xd8\xff", "full"),
        lambda: d.decode_into(b"\xff\xd8\xff", "full", np.empty((1, 1, 3), np.uint8)),
    ):
        with pytest.raises(DecoderUnavailable) as err:
            call()
        assert str(err.value) == why and isinstance(err.value, UserError)
    decoders_cli.run(None)  # the listing still lists everything
    listing = capsys.readouterr().out
    assert f"\nturbojpeg     {why}\n" in listing and "\nsimplejpeg    simplejpeg " in listing


def test_the_package_imports_and_lists_decoders_without_pyturbojpeg():
    code = (
        "import sys; sys.modules['turbojpeg'] = None\n"
        "from imgread.cli.main import main\n"
        "main(['decoders'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "turbojpeg     decoder turbojpeg is unavailable: PyTurboJPEG is not installed" in (
        r.stdout
    )
