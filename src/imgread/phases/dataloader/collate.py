"""How the DataLoader phase's batches are put together and normalised: ``collate pooled``
(:class:`PooledCollate`, buffers of shared memory reused) and ``normalize batch``
(:func:`normalize_batch`, the uint8 batch normalised by the training process);
docs/dataloader.md says what each costs."""

from __future__ import annotations

import math

from imgread.phases.dataloader import decoded_cache

PREFETCH_FACTOR = 2  # PyTorch's default, recorded
# A worker has at most PREFETCH_FACTOR batches in flight, and the consumer holds one more.
POOL_SLOTS = PREFETCH_FACTOR + 1


def normalize_batch(batch_u8):
    """A uint8 N x 3 x 224 x 224 batch -> float32, normalised as each sample is with
    normalize ``item`` (decoded_cache.normalize: x / 255, then Normalize(0.5, 0.5)): the same
    float32 operations, so the same values to the bit; one new tensor, then in place."""
    import torch

    mean, std = decoded_cache.MEAN, decoded_cache.STD
    return batch_u8.to(torch.float32).div_(255.0).sub_(mean).div_(std)


class PooledCollate:
    """A DataLoader ``collate_fn`` whose batches reuse shared memory: ``collate pooled``.

    PyTorch's ``default_collate`` in a worker stacks every batch into a new shared-memory
    segment, which the kernel zero-fills page by page as the worker writes it and the training
    process maps afresh. Here each worker makes ``slots`` buffers of shared memory with its
    first batch and stacks every later batch into one that is free; the consumer calls
    :meth:`release` once it is done with a batch (has copied what it keeps), which frees the
    buffer, and keeps the buffer's mapping, so that the buffer's next batch arrives mapped
    already (PyTorch's ``shared_cache`` finds the storage). Which buffers are free is one
    shared byte each (``busy``): a worker never writes a buffer the consumer still holds; where
    none is free (a consumer that keeps its batches, or did not release one) it collates into
    fresh memory as ``default_collate`` does and counts it in ``misses``, so nothing waits.

    A batch is ``(images, labels, slot)``, ``slot`` None for one collated fresh. With
    ``num_workers`` 0 the buffers are the process's own memory, reused the same way.
    """

    def __init__(self, batch_size: int, workers: int, slots: int = POOL_SLOTS):
        import torch

        self.batch_size, self.slots = batch_size, slots
        self.busy = torch.zeros((max(workers, 1), slots), dtype=torch.uint8).share_memory_()
        self.misses = torch.zeros(max(workers, 1), dtype=torch.int64).share_memory_()
        self._buffers = None  # [(images, labels)] per slot, made where the collating runs
        self._shape = None  # a sample's shape, the buffers' (from the first batch)
        self._kept: dict = {}  # the consumer's: each slot's images as it last received them

    def _buffer(self, shape, shared: bool):
        import torch

        images = torch.empty((self.batch_size, *shape), dtype=torch.uint8)
        labels = torch.empty(self.batch_size, dtype=torch.int64)
        return (images.share_memory_(), labels.share_memory_()) if shared else (images, labels)

    def __call__(self, samples):
        import torch
        from torch.utils.data import default_collate, get_worker_info

        info = get_worker_info()
        w = info.id if info is not None else 0
        if self._buffers is None:
            self._shape = tuple(samples[0][0].shape)
            self._buffers = [self._buffer(self._shape, info is not None) for _ in range(self.slots)]
        fits = len(samples) <= self.batch_size and all(
            x.dtype == torch.uint8 and tuple(x.shape) == self._shape for x, _ in samples
        )
        free = [s for s in range(self.slots) if not self.busy[w, s]] if fits else []
        if not free:
            self.misses[w] += 1
            return (*default_collate(samples), None)
        s = free[0]
        self.busy[w, s] = 1
        images, labels = self._buffers[s]
        n = len(samples)
        torch.stack([x for x, _ in samples], out=images[:n])
        labels[:n] = torch.as_tensor([int(y) for _, y in samples])
        return images[:n], labels[:n], (w, s)

    def release(self, batch) -> None:
        """The consumer is done with ``batch``: its buffer may take another batch."""
        slot = batch[2]
        if slot is not None:
            self._kept[slot] = batch[0]  # the mapping kept: its next batch needs no new one
            self.busy[slot] = 0

    def pool_bytes(self, sample_shape, workers: int) -> int:
        """The buffers' memory over all workers (shared memory, mapped by the consumer too)."""
        per = self.batch_size * (math.prod(sample_shape) + 8)
        return per * self.slots * max(workers, 1)
