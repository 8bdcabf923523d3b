"""A cache of decoded, preprocessed images (the PyTorch seed's third recipe), built once per
dataset and decoder, and the labels and preprocessing every DataLoader trial shares.

A cache folder holds, for the first N images of a manifest decoded by one decoder to the 224
crop:

- ``images_u8.npy``: a ``uint8`` N x 3 x 224 x 224 array (CHW), read with
  ``np.load(mmap_mode="r")``; the normalisation runs per sample when it is read;
- ``tensors.pkl``: ``pickle`` of ``{relative path: float32 3 x 224 x 224 tensor}``, already
  normalised, exactly as the seed caches (``pickle.dump`` of a dict of tensors);
- ``labels.npy`` and ``cache.json``: labels, and what was built, how long it took and how many
  bytes each form takes on disk.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np

from imgread.dataset.labels import labels as class_labels
from imgread.dataset.manifest import read_manifest
from imgread.decoders import CROP, get_decoder
from imgread.errors import UserError
from imgread.util import Progress, atomic_path, write_json_atomic

NPY_NAME = "images_u8.npy"
PICKLE_NAME = "tensors.pkl"
LABELS_NAME = "labels.npy"
INFO_NAME = "cache.json"
MEAN = STD = 0.5  # the seed's Normalize((0.5,)*3, (0.5,)*3)


def normalize(chw_u8: np.ndarray) -> np.ndarray:
    """uint8 CHW -> float32 CHW in [-1, 1]: ToTensor (x / 255) then Normalize(0.5, 0.5)."""
    return (chw_u8.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)


def denormalize(chw: np.ndarray) -> np.ndarray:
    """The uint8 CHW a normalised sample came from (exact: the map is affine and 1/255 apart)."""
    return np.rint((np.asarray(chw, dtype=np.float32) * STD + MEAN) * 255.0).astype(np.uint8)


def build(
    manifest_path: str | os.PathLike,
    decoder: str,
    out: str | os.PathLike,
    n: int | None = None,
    progress: bool = True,
) -> dict:
    """Decode the first ``n`` images (all by default) with ``decoder`` to the 224 crop and write
    both cache forms into ``out``; return what cache.json records."""
    import torch

    manifest = read_manifest(manifest_path)
    d = get_decoder(decoder)
    entries = manifest.subset(n or len(manifest))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bar = Progress(len(entries), f"cache {decoder}", enabled=progress)
    t0 = time.perf_counter()
    tensors = {}
    with atomic_path(out / NPY_NAME) as tmp:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(entries), 3, CROP, CROP)
        )
        for i, e in enumerate(entries):
            chw = np.ascontiguousarray(
                d.decode(str(manifest.root / e.path), "crop224").transpose(2, 0, 1)
            )
            arr[i] = chw
            tensors[e.path] = torch.from_numpy(normalize(chw))
            bar.update()
        arr.flush()
        del arr
    npy_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    with atomic_path(out / PICKLE_NAME) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(tensors, fh, protocol=pickle.HIGHEST_PROTOCOL)
    pickle_seconds = time.perf_counter() - t1
    with atomic_path(out / LABELS_NAME) as tmp:
        np.save(tmp, class_labels(manifest)[: len(entries)], allow_pickle=False)
    info = {
        "decoder": decoder,
        "decoder_version": d.version(),
        "images": len(entries),
        "dataset_id": manifest.dataset_id,
        "npy_bytes": (out / NPY_NAME).stat().st_size,
        "pickle_bytes": (out / PICKLE_NAME).stat().st_size,
        # decoding is shared by both forms: it is counted in the npy build, and the pickle's
        # build time is decoding (the npy's) plus its own serialisation
        "decode_seconds": npy_seconds,
        "npy_build_seconds": npy_seconds,
        "pickle_build_seconds": npy_seconds + pickle_seconds,
    }
    write_json_atomic(out / INFO_NAME, info, indent=2)
    return info


def read_info(cache_dir: str | os.PathLike, dataset_id: str, decoder: str, n: int) -> dict:
    """cache.json of a cache that covers ``n`` images of this dataset decoded by ``decoder``."""
    path = Path(cache_dir) / INFO_NAME
    if not path.is_file():
        raise UserError(f"no decoded cache in {cache_dir} (build one with 'imgread cache build')")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info["dataset_id"] != dataset_id or info["decoder"] != decoder or info["images"] < n:
        raise UserError(
            f"{cache_dir} caches {info['images']} images of dataset {info['dataset_id']} decoded "
            f"by {info['decoder']}; this trial needs {n} of {dataset_id} by {decoder}"
        )
    return info
