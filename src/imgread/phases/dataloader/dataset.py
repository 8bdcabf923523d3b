"""The DataLoader phase's map-style Dataset: ImageFolder's equivalent over a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgread.decoders import DECODERS
from imgread.phases.dataloader import decoded_cache


class ManifestDataset:
    """ImageFolder's equivalent over a manifest: ``(tensor, label)`` per index.

    Only paths and labels live here (and, for ``cache-pickle``, the loaded tensors, as the seed
    does); the ``.npy`` cache is mapped read-only for each sample.
    """

    def __init__(
        self, paths, labels, decoder, source, cache_dir=None, tensors=None, normalize="item"
    ):
        self.paths, self.labels = list(paths), [int(x) for x in labels]
        self.decoder, self.source, self.cache_dir = decoder, source, cache_dir
        self.normalize = normalize  # "batch": the uint8 sample, its batch normalised later
        self.tensors = tensors  # cache-pickle: {relative path: tensor}, keyed by self.keys
        self.keys = None
        self.opener = None  # the trial's storage where it is not the local files

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        if self.source == "cache-pickle":
            return self.tensors[self.keys[i]], self.labels[i]
        if self.source == "cache-npy":
            # Mapped per sample and unmapped at once: a page a process keeps mapped cannot be
            # evicted, so a map kept from the warm-up epoch would defeat the cold epoch.
            arr = np.load(Path(self.cache_dir) / decoded_cache.NPY_NAME, mmap_mode="r")
            chw = np.array(arr[i])
            del arr
        else:
            src = self.paths[i] if self.opener is None else self.opener.read(self.paths[i])
            chw = DECODERS[self.decoder].decode(src, "crop224").transpose(2, 0, 1)
        if self.normalize == "batch":
            return torch.from_numpy(chw), self.labels[i]
        return torch.from_numpy(decoded_cache.normalize(chw)), self.labels[i]
