"""The DataLoader phase's ``source: shards``: the dataset's tar shards read with the real
``webdataset`` library, as its documentation builds a training pipeline:

    shard list -> shard shuffle (detshuffle: the same order in every worker) ->
    split_by_worker -> open -> tar members -> samples grouped by key -> sample shuffle buffer
    -> decode + 224 crop + normalise -> DataLoader batches

One stage is the project's, not webdataset's: each shard's bytes come through the trial's
storage opener (imgread.storage: the local file, a throttled volume, nginx over http), read
whole, instead of webdataset's ``gopen`` (a ``curl`` pipe for http), so that the transport,
its retries and its counts are the same as every other reader's.

The samples past the first n of the dataset (the last shard may hold more) are dropped by key,
so an epoch yields exactly n samples across the workers. Each sample carries its key, so the
check after the clock can prove none came twice and none is missing, whatever the shuffle.

Memory: the sample shuffle buffer holds ``SHUFFLE_BUFFER`` compressed samples per worker
(webdataset's examples use 1000); its size in bytes is recorded from the shards' mean image
size (``shuffle_buffer_bytes``), and the trial's peak memory counts it with the rest.
"""

from __future__ import annotations

import io
import multiprocessing as mp

from imgread.dataset import shards as shardlib
from imgread.decoders import DECODERS

SHUFFLE_BUFFER = 1000  # samples per worker, as webdataset's examples shuffle
SHARD_SHUFFLE_SEED = 0  # detshuffle's seed (plus the epoch): every worker the same order


class ShardSamples:
    """A picklable IterableDataset factory: ``make()`` builds the webdataset pipeline in the
    process that iterates it (a DataLoader worker, or the trial's for num_workers=0)."""

    def __init__(self, urls, n: int, decoder: str, shuffle_buffer: int = SHUFFLE_BUFFER):
        self.urls, self.n, self.decoder = list(urls), int(n), decoder
        self.shuffle_buffer = int(shuffle_buffer)
        self.opener = None  # the trial's storage where it is not the local files
        # How many shards an epoch reads: all, or the warm-up's first few. Shared memory made
        # before the workers start, so persistent workers see the value each epoch is set to.
        self.limit = mp.get_context("fork").Value("i", len(self.urls), lock=False)

    def pipeline(self):
        import webdataset as wds
        from webdataset.tariterators import group_by_keys, tar_file_expander

        return wds.DataPipeline(
            _ShardList(self),
            wds.detshuffle(bufsize=len(self.urls), seed=SHARD_SHUFFLE_SEED),
            wds.split_by_worker,
            _Open(self.opener),
            tar_file_expander,
            group_by_keys,
            wds.select(_FirstN(self.n)),
            wds.shuffle(self.shuffle_buffer),
            wds.map(_Sample(self.decoder)),
        )


class _ShardList:
    """The shard list of an epoch: the first ``limit`` shards (webdataset's SimpleShardList
    takes a fixed list; this one reads the epoch's length from shared memory)."""

    def __init__(self, source: ShardSamples):
        self.source = source

    def __call__(self):  # a pipeline's first stage: called with nothing, yields the source
        for url in self.source.urls[: self.source.limit.value]:
            yield {"url": url}


class _Open:
    """webdataset's url_opener, with the storage kind's opener in place of gopen."""

    def __init__(self, opener):
        self.opener = opener

    def __call__(self, src):
        for sample in src:
            url = sample["url"]
            if self.opener is None:
                with open(url, "rb") as fh:
                    data = fh.read()
            else:
                data = self.opener.read(url)
            yield dict(sample, stream=io.BytesIO(data))


class _FirstN:
    def __init__(self, n: int):
        self.n = n

    def __call__(self, sample) -> bool:
        return int(sample["__key__"]) < self.n


class _Sample:
    """(normalised 3 x 224 x 224 tensor, class, key) of one sample: the same decode, crop and
    normalisation as the loose-file source."""

    def __init__(self, decoder: str):
        self.decoder = decoder

    def __call__(self, sample):
        import torch

        from imgread.phases.dataloader import decoded_cache

        image = next(v for k, v in sample.items() if k in _IMAGE_EXTENSIONS)
        chw = DECODERS[self.decoder].decode(image, "crop224").transpose(2, 0, 1)
        return (
            torch.from_numpy(decoded_cache.normalize(chw)),
            int(sample["cls"]),
            int(sample["__key__"]),
        )


_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "avif")


def shard_urls(root, shard_mb: int, n: int, dataset_id: str) -> list[str]:
    """The paths of the shards that hold the first ``n`` images."""
    index = shardlib.read_index(root, shard_mb, dataset_id)
    return [str(root / s.path) for s in shardlib.covering(index, n)]


def shuffle_buffer_bytes(entries, workers: int, shuffle_buffer: int = SHUFFLE_BUFFER) -> float:
    """What the sample shuffle buffers hold at most: per worker (the trial's process for
    num_workers=0) min(buffer, its samples) compressed images of the dataset's mean size."""
    n = len(entries)
    mean = sum(e.bytes for e in entries) / max(n, 1)
    per_worker = min(shuffle_buffer, -(-n // max(workers, 1)))
    return max(workers, 1) * per_worker * mean
