"""The check after the clock for a pipeline the project did not write
(imgread.phases.dataloader.pipelines.check.verify_peer): a faithful epoch passes and records
its pixel error; a lazy image, the encoded bytes, a crop shifted by even one pixel, BGR for
RGB, un-normalised uint8 and float samples, a wrapped (padded) last batch and a dropped sample
each fail."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from imgread.decoders import CROP, get_decoder
from imgread.decoders.base import resize_shorter
from imgread.errors import VerificationError
from imgread.phases.dataloader.pipelines.check import (
    MAE_LIMIT,
    SHIFT_TOLERANCE,
    verify_peer,
    window_error,
)
from imgread.trial.context import read_dataset

N = 6
BATCH = 4


@pytest.fixture(scope="module")
def ctx(small_dataset):
    data = read_dataset(small_dataset, N)
    return SimpleNamespace(
        root=data.manifest.root,
        entries=data.entries,
        manifest=data.manifest,
        params={"decoder": "pillow"},
    )


def _crops(ctx, transform=None) -> list[np.ndarray]:
    """Each entry's reference crop (H x W x 3 uint8), or ``transform(full RGB)`` of it."""
    pillow = get_decoder("pillow")
    out = []
    for e in ctx.entries:
        path = str(ctx.root / e.path)
        out.append(pillow.decode(path, "crop224") if transform is None else transform(path))
    return out


def _normalise(hwc: np.ndarray) -> np.ndarray:
    return ((hwc.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def _epoch(samples, keys=None, batch=BATCH) -> list:
    """(images, labels, keys) batches of NCHW samples, keys in order unless given."""
    keys = list(range(len(samples))) if keys is None else keys
    out = []
    for i in range(0, len(keys), batch):
        ks = keys[i : i + batch]
        out.append((np.stack([samples[k] for k in ks]), np.zeros(len(ks), np.int64), np.array(ks)))
    return out


def _shifted(path: str, by: int = 16) -> np.ndarray:
    """The reference's resize, its crop window moved ``by`` pixels right and down."""
    small = resize_shorter(np.asarray(Image.open(path).convert("RGB")))
    th, tw = small.shape[:2]
    top, left = (th - CROP) // 2 + by, (tw - CROP) // 2 + by
    return small[top : top + CROP, left : left + CROP]


def test_a_faithful_epoch_passes_and_records_its_pixel_error(ctx):
    crops = _crops(ctx)
    out = verify_peer(ctx, _epoch([_normalise(c) for c in crops], keys=[5, 0, 3, 1, 4, 2]), "p")
    assert out.images == N
    assert out.extra["samples_unique"] == N
    # normalised and mapped back: float rounding only, far under a level
    assert 0 <= out.extra["pixel_mae_max"] < 0.01
    assert out.extra["pixel_mae_limit"] == MAE_LIMIT


def test_nhwc_is_read_as_declared(ctx):
    crops = [_normalise(c).transpose(1, 2, 0) for c in _crops(ctx)]
    assert verify_peer(ctx, _epoch(crops), "p", layout="NHWC").images == N
    with pytest.raises(VerificationError, match="expected samples of NCHW"):
        verify_peer(ctx, _epoch(crops), "p", layout="NCHW")


def test_a_crop_a_pixel_off_passes_and_four_pixels_off_fails(ctx):
    # Libraries round the crop's corner differently (torchvision rounds, the reference floors):
    # one pixel is within the tolerance, measured as the same error as the reference's own.
    crops = _crops(ctx, lambda p: _shifted(p, by=SHIFT_TOLERANCE))
    out = verify_peer(ctx, _epoch([_normalise(c) for c in crops]), "p")
    assert out.extra["pixel_mae_max"] < 1.0 and out.extra["pixel_shift_tolerance"] == 1
    # Four pixels off is a wrong crop: every pixel's neighbourhood moves (docs/pipelines.md).
    crops = _crops(ctx, lambda p: _shifted(p, by=4))
    with pytest.raises(VerificationError, match="differs from the reference"):
        verify_peer(ctx, _epoch([_normalise(c) for c in crops]), "p")


@pytest.mark.parametrize(
    "broken, message",
    [
        ("lazy", "not an array of decoded pixels"),
        ("encoded", "not an array of decoded pixels"),
        ("uint8", "is uint8, expected float32"),
        ("unnormalised-float", "differs from the reference"),
        ("bgr", "differs from the reference"),
        ("shifted", "differs from the reference"),
    ],
)
def test_what_is_not_the_transform_fails(ctx, broken, message):
    crops = _crops(ctx)
    paths = [str(ctx.root / e.path) for e in ctx.entries]
    if broken == "lazy":
        batches = [([Image.open(p) for p in paths[:BATCH]], np.zeros(BATCH), np.arange(BATCH))]
    elif broken == "encoded":
        batches = [(open(paths[0], "rb").read(), np.zeros(1), np.arange(1))]
    elif broken == "uint8":
        batches = _epoch([c.transpose(2, 0, 1) for c in crops])
    elif broken == "unnormalised-float":
        batches = _epoch([(c.astype(np.float32) / 255.0).transpose(2, 0, 1) for c in crops])
    elif broken == "bgr":
        batches = _epoch([_normalise(c[:, :, ::-1]) for c in crops])
    else:
        batches = _epoch([_normalise(c) for c in _crops(ctx, _shifted)])
    with pytest.raises(VerificationError, match=message):
        verify_peer(ctx, batches, "p")


def test_a_wrapped_last_batch_and_a_dropped_sample_fail(ctx):
    samples = [_normalise(c) for c in _crops(ctx)]
    # DALI's default: the last batch filled up with the first samples again
    with pytest.raises(VerificationError, match="8 samples for 6 images: 2 came more than once"):
        verify_peer(ctx, _epoch(samples, keys=[0, 1, 2, 3, 4, 5, 0, 1]), "p")
    with pytest.raises(VerificationError, match="5 samples for 6 images: 0 came more than once, 1"):
        verify_peer(ctx, _epoch(samples, keys=[0, 1, 2, 3, 4]), "p")
    images, labels, _ = _epoch(samples[:4])[0]
    with pytest.raises(VerificationError, match="key 9 is not one of the 6"):
        verify_peer(ctx, [(images, labels, np.array([0, 1, 2, 9]))], "p")


def test_a_wrong_label_fails(ctx):
    batches = _epoch([_normalise(c) for c in _crops(ctx)])
    images, labels, keys = batches[0]
    batches[0] = (images, labels + 1, keys)
    with pytest.raises(VerificationError, match="has label 1, the manifest's is 0"):
        verify_peer(ctx, batches, "p")


def test_the_window_error_is_the_best_window_within_the_tolerance():
    rng = np.random.default_rng(3)
    resized = rng.integers(0, 256, (256, 300, 3)).astype(np.uint8)
    top, left = (256 - CROP) // 2, (300 - CROP) // 2
    centre = resized[top : top + CROP, left : left + CROP].astype(np.float32)
    assert window_error(centre, resized) == 0.0
    one_off = resized[top + 1 : top + 1 + CROP, left - 1 : left - 1 + CROP].astype(np.float32)
    assert window_error(one_off, resized) == 0.0
    two_off = resized[top + 2 : top + 2 + CROP, left : left + CROP].astype(np.float32)
    assert window_error(two_off, resized) > 50  # random pixels: about 85 levels apart
    assert window_error(centre + 3.0, resized) == pytest.approx(3.0, abs=0.01)
