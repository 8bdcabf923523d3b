"""The DataLoader phase's check of an epoch, after the clock: every sample once, its label,
and its pixels against the sequential decode's checksums (imgread.decoders.reference)."""

from __future__ import annotations

import time

import numpy as np

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP, checksum
from imgread.decoders.reference import read_reference, reference_checksums
from imgread.errors import VerificationError
from imgread.phases import base
from imgread.phases.dataloader import decoded_cache


def verify_epoch(ctx, results: list) -> base.Verified:
    """The epoch's batches checked against the trial's images (VerificationError otherwise):
    in order, or from shards shuffled (checked by key); images, bytes, pixels and columns."""
    root, entries, params = ctx.root, ctx.entries, ctx.params
    n = len(entries)
    t0 = time.perf_counter()
    if ctx.reference is None:
        ref = reference_checksums(root, entries, params["decoder"], "crop224")
    else:
        ref = read_reference(ctx.reference, root, params["decoder"], "crop224")
    labels = class_labels(ctx.manifest)[:n]
    if params["source"] == "shards":
        extra = verify_shuffled(results, root, entries, params, ref, labels)
        return base.Verified(
            n,
            sum(e.bytes for e in entries),
            sum(e.pixels for e in entries),
            {
                "checksums_checked": n,
                "verify_seconds": time.perf_counter() - t0,
                "output_pixels": n * CROP * CROP,
                **extra,
            },
        )
    verify_ordered(results, root, entries, params, ref, labels)
    nbytes = {
        "jpeg": sum(e.bytes for e in entries),
        "cache-npy": n * 3 * CROP * CROP,
        "cache-pickle": 0,
    }[params["source"]]
    pixels = sum(e.pixels for e in entries) if params["source"] == "jpeg" else n * CROP * CROP
    return base.Verified(
        n,
        nbytes,
        pixels,
        {
            "checksums_checked": n,
            "verify_seconds": time.perf_counter() - t0,
            "output_pixels": n * CROP * CROP,
        },
    )


def verify_ordered(results, root, entries, params, ref, labels) -> None:
    """A map-style source's epoch: float32 batches of batch_size in the images' order, each
    sample's label and pixels those of its image."""
    n, batch = len(entries), int(params["batch_size"])
    i = 0
    for b, (x, y) in enumerate(results):
        want = min(batch, n - i)
        if tuple(x.shape) != (want, 3, CROP, CROP) or str(x.dtype) != "torch.float32":
            raise VerificationError(
                f"dataloader: batch {b} is {x.dtype} {tuple(x.shape)}, expected float32 "
                f"({want}, 3, {CROP}, {CROP})"
            )
        if y.tolist() != labels[i : i + want].tolist():
            raise VerificationError(f"dataloader: batch {b} has the wrong labels")
        for k, sample in enumerate(x.numpy()):
            path = str(root / entries[i + k].path)
            hwc = decoded_cache.denormalize(sample).transpose(1, 2, 0)
            if ref[path] != ((CROP, CROP, 3), checksum(hwc)):
                raise VerificationError(
                    f"dataloader: sample {i + k} ({path}) differs from the sequential "
                    f"{params['decoder']} decode"
                )
        i += want
    if i != n:
        raise VerificationError(f"dataloader: the epoch yielded {i} samples, expected {n}")


def verify_shuffled(results, root, entries, params, ref, labels) -> dict:
    """The shards source's epoch: shuffled, so each sample is checked by its key (its image's
    position in the order): every one of the n exactly once, its label and its pixels."""
    n, batch = len(entries), int(params["batch_size"])
    seen = np.zeros(n, dtype=np.int64)
    for b, (x, y, keys) in enumerate(results):
        if x.shape[0] > batch or tuple(x.shape[1:]) != (3, CROP, CROP):
            raise VerificationError(
                f"dataloader: batch {b} is {tuple(x.shape)}, expected at most {batch} samples "
                f"of (3, {CROP}, {CROP})"
            )
        for sample, label, key in zip(x.numpy(), y.tolist(), keys.tolist(), strict=True):
            if not 0 <= key < n:
                raise VerificationError(f"dataloader: sample key {key} is not one of the {n}")
            seen[key] += 1
            if label != labels[key]:
                raise VerificationError(f"dataloader: sample {key} has the wrong label")
            path = str(root / entries[key].path)
            hwc = decoded_cache.denormalize(sample).transpose(1, 2, 0)
            if ref[path] != ((CROP, CROP, 3), checksum(hwc)):
                raise VerificationError(
                    f"dataloader: sample {key} ({path}) differs from the sequential "
                    f"{params['decoder']} decode"
                )
    twice, missing = int((seen > 1).sum()), int((seen == 0).sum())
    if twice or missing:
        raise VerificationError(
            f"dataloader: the shards' epoch yielded {int(seen.sum())} samples for {n} images: "
            f"{twice} came more than once, {missing} never"
        )
    return {"samples_unique": n}
