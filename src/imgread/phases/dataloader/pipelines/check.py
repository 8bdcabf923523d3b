"""The check after the clock of a pipeline the project did not write: what it delivered,
taken at its word for nothing.

Each batch is ``(images, labels, keys)``: ``keys`` the manifest position each sample came
from, carried through the library. The check wants float32 arrays of the declared layout and
224 x 224 x 3 samples (a lazy image, encoded bytes or un-normalised uint8 fail here), every
one of the n entries exactly once (a library that pads or wraps its last batch, as DALI does
by default, or drops it, fails here), each sample's class label, and its pixels near the
project's reference of the same transform (the ``decoder`` key's decode, shorter side to 256
with INTER_AREA, centre crop 224): decoders and resizers round differently, so the pixels are
compared by a stated metric, not bit for bit, at the best crop window within a pixel of the
reference's.

The metric: the mean absolute difference, in 0-255 levels, between the sample (mapped back
from the seed's normalisation) and the reference, per sample; a sample fails above
:data:`MAE_LIMIT`. The largest of the epoch is recorded (``pixel_mae_max``) and the mean
(``pixel_mae_mean``), so that every peer's rounding is a measured figure (docs/pipelines.md).
"""

from __future__ import annotations

import time

import numpy as np

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP, get_decoder
from imgread.decoders.base import resize_shorter
from imgread.errors import VerificationError
from imgread.phases import base

# Levels of 0-255 a sample may differ from the reference by, on average over its pixels, at the
# best of the crop windows within SHIFT_TOLERANCE pixels of the reference's: libraries round the
# crop's corner and the resized long side differently (torchvision rounds (h - 224) / 2, the
# reference floors it), which on finely textured images alone costs 6 to 13 levels.
# Measured on 2,000 of the 10,000-image ImageNet-like set (394 x 324 to 622 x 464,
# docs/pipelines.md): torchvision's PIL Resize(256) + CenterCrop(224) is at most 7.2 levels
# from the reference at its best window (at the reference's own window: median 4.4, up to 12.7);
# the crop moved by 4 pixels is at least 10.5 away, by 16 pixels at least 24, BGR for RGB at
# least 28, and un-normalised samples far more.
MAE_LIMIT = 10.0
SHIFT_TOLERANCE = 1


def to_hwc_uint8_levels(sample: np.ndarray, layout: str) -> np.ndarray:
    """A normalised float32 sample, in 0-255 levels (float) and H x W x 3."""
    hwc = sample if layout == "NHWC" else np.transpose(sample, (1, 2, 0))
    return (hwc.astype(np.float32) * 0.5 + 0.5) * 255.0


def _as_array(images, name: str, b: int) -> np.ndarray:
    """The batch's images as a numpy array, refused where they are not one (PIL images, bytes,
    a list of tensors): only an array-like of numbers passes."""
    if isinstance(images, bytes | bytearray | str) or not hasattr(images, "__array__"):
        if hasattr(images, "numpy"):
            images = images.numpy()
        else:
            raise VerificationError(
                f"{name}: batch {b} is {type(images).__name__}, not an array of decoded pixels"
            )
    arr = np.asarray(images)
    if arr.dtype != np.float32:
        raise VerificationError(
            f"{name}: batch {b} is {arr.dtype}, expected float32 normalised with the seed's "
            "(x / 255 - 0.5) / 0.5"
        )
    return arr


def _shape_ok(arr: np.ndarray, layout: str) -> bool:
    want = (3, CROP, CROP) if layout == "NCHW" else (CROP, CROP, 3)
    return arr.ndim == 4 and tuple(arr.shape[1:]) == want


def _samples(batch, b: int, name: str, layout: str, n: int, labels):
    """(sample, key) of each sample of batch ``b``, its form, count and label checked."""
    if not isinstance(batch, tuple | list) or len(batch) != 3:
        raise VerificationError(f"{name}: batch {b} is not (images, labels, keys)")
    arr = _as_array(batch[0], name, b)
    if not _shape_ok(arr, layout):
        raise VerificationError(
            f"{name}: batch {b} is {tuple(arr.shape)}, expected samples of {layout} "
            f"{CROP} x {CROP} x 3"
        )
    ys = np.asarray(batch[1]).reshape(-1).tolist()
    keys = np.asarray(batch[2]).reshape(-1).tolist()
    if not len(ys) == len(keys) == arr.shape[0]:
        raise VerificationError(
            f"{name}: batch {b} has {arr.shape[0]} images, {len(ys)} labels, {len(keys)} keys"
        )
    for sample, label, key in zip(arr, ys, keys, strict=True):
        key = int(key)
        if not 0 <= key < n:
            raise VerificationError(f"{name}: sample key {key} is not one of the {n}")
        if int(label) != int(labels[key]):
            raise VerificationError(
                f"{name}: sample {key} has label {label}, the manifest's is {labels[key]}"
            )
        yield sample, key


def window_error(levels: np.ndarray, resized: np.ndarray) -> float:
    """The least mean absolute difference between ``levels`` (224 x 224 x 3, 0-255 floats) and
    the 224 x 224 windows of ``resized`` whose corner is within :data:`SHIFT_TOLERANCE` pixels
    of the centre crop's."""
    h, w = resized.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    best = np.inf
    for t in range(max(0, top - SHIFT_TOLERANCE), min(h - CROP, top + SHIFT_TOLERANCE) + 1):
        for lft in range(max(0, left - SHIFT_TOLERANCE), min(w - CROP, left + SHIFT_TOLERANCE) + 1):
            window = resized[t : t + CROP, lft : lft + CROP].astype(np.float32)
            best = min(best, float(np.abs(levels - window).mean()))
    return best


def _pixel_error(ctx, decoder, key: int, sample, name: str, layout: str) -> float:
    """The sample's mean absolute difference from the reference crop of its entry, in levels;
    VerificationError above :data:`MAE_LIMIT`."""
    entry = ctx.entries[key]
    resized = resize_shorter(decoder.decode(str(ctx.root / entry.path), "full"))
    error = window_error(to_hwc_uint8_levels(sample, layout), resized)
    if error > MAE_LIMIT:
        raise VerificationError(
            f"{name}: sample {key} ({entry.path}) differs from the reference "
            f"{decoder.name} crop by {error:.1f} levels on average (limit "
            f"{MAE_LIMIT}): a shifted crop, swapped channels or another normalisation"
        )
    return error


def verify_peer(ctx, results: list, name: str, layout: str = "NCHW") -> base.Verified:
    """The peer's epoch checked against the trial's entries (VerificationError otherwise):
    exactly n distinct samples, labels, pixels within :data:`MAE_LIMIT` of the reference."""
    t0 = time.perf_counter()
    entries, n = ctx.entries, len(ctx.entries)
    labels = class_labels(ctx.manifest)[:n]
    decoder = get_decoder(ctx.params.get("decoder", "pillow"))
    seen = np.zeros(n, dtype=np.int64)
    errors = np.zeros(n, dtype=np.float64)
    for b, batch in enumerate(results):
        for sample, key in _samples(batch, b, name, layout, n, labels):
            seen[key] += 1
            if seen[key] == 1:
                errors[key] = _pixel_error(ctx, decoder, key, sample, name, layout)
    twice, missing = int((seen > 1).sum()), int((seen == 0).sum())
    if twice or missing:
        raise VerificationError(
            f"{name}: the epoch yielded {int(seen.sum())} samples for {n} images: {twice} came "
            f"more than once, {missing} never"
        )
    return base.Verified(
        n,
        sum(e.bytes for e in entries),
        sum(e.pixels for e in entries),
        {
            "checksums_checked": 0,
            "samples_unique": n,
            "pixel_mae_max": float(errors.max()) if n else 0.0,
            "pixel_mae_mean": float(errors.mean()) if n else 0.0,
            "pixel_mae_limit": MAE_LIMIT,
            "pixel_shift_tolerance": SHIFT_TOLERANCE,
            "verify_seconds": time.perf_counter() - t0,
            "output_pixels": n * CROP * CROP,
        },
    )
