"""Phase ``dataloader``: feed a PyTorch model through ``torch.utils.data.DataLoader``.

Each sample is a decoder's 224 crop as a float32 3 x 224 x 224 tensor normalised with the
seed's ``Normalize((0.5,)*3, (0.5,)*3)``, and its label (ImageFolder's: the first folder level
of a sampled source, else one class). The Dataset holds only a list of paths and labels, so
the workers that fork from it copy nothing large on read.

Grid keys: ``decoder``; ``source`` (``jpeg``: decode every epoch; ``cache-npy``: the uint8
crops of a decoded cache, ``np.load(mmap_mode="r")``; ``cache-pickle``: the seed's pickle of
preprocessed tensors, loaded into memory before the epoch; ``shards``: the dataset's tar shards
of ``shard_mb`` MB read with the webdataset library, imgread.phases.dataloader.shards);
``shard_mb`` (0: loose files); ``batch_size``; ``page_cache``
(cold: the files the epoch reads are evicted and proven cold; warm); ``pin_memory``;
``allocator`` (imgread.decoders.allocator: default | tuned, given to the training process and to
every worker before the clock); ``normalize``, where the uint8 -> float32 normalisation runs:
- ``item`` (torchvision's ``ToTensor()`` + ``Normalize`` in the Dataset): each sample leaves
  the worker as float32, so a batch crosses to the training process at 4 bytes a pixel, through
  a shared-memory segment the worker allocates (and faults in) afresh for every batch;
- ``batch`` (uint8 samples collated as they are, the batch normalised by its consumer, as
  NVIDIA's ImageNet example does on the GPU): 1 byte a pixel crosses, and the training process
  normalises each batch as it takes it, inside the timed epoch. The float32 batches are the
  same to the bit (:func:`normalize_batch`);
``collate``, how a batch is put together in a worker (with ``normalize batch``):
- ``fresh`` (PyTorch's ``default_collate``): every batch in a new shared-memory segment,
  allocated, faulted in and mapped again in the training process, and its file descriptor
  passed over a socket;
- ``pooled`` (:class:`PooledCollate`): each worker stacks its batches into a few buffers of
  shared memory it made once (``PREFETCH_FACTOR + 1``), and the training process hands a
  buffer back once it has normalised (copied) its batch; a buffer still held is never written
  (the worker collates into fresh memory instead and counts it: ``collate_pool_misses``).
Both are recorded, with what the trial's process and its workers had (``allocator_settings``,
``worker_allocator_settings``, ``worker_torch_threads``); docs/dataloader.md says what each
costs a worker and why.

Timing: the DataLoader is built and one short warm-up epoch run before the clock (its workers
are persistent, so the timed epoch finds them started, the decoder imported):
``startup_seconds``. The timed epoch runs from ``iter(loader)`` to the last batch
(``seconds``), with the time to the first batch beside it (``first_batch_seconds``).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import re
import time
from multiprocessing import util as mp_util
from pathlib import Path

import numpy as np

from imgread.decoders import CROP, DECODERS, allocator, checksum, warm_up
from imgread.decoders.reference import read_reference, reference_checksums
from imgread.errors import ImageDecodeError, UserError, VerificationError
from imgread.phases import base
from imgread.phases.dataloader import decoded_cache
from imgread.phases.dataloader import shards as shardsrc
from imgread.trial.pools import Runner, WorkerDied, death_of, kill_all
from imgread.util import end_on_sigterm

SOURCES = ("jpeg", "cache-npy", "cache-pickle", "shards")
NORMALIZE = ("item", "batch")
COLLATE = ("fresh", "pooled")
# The grid keys of how a loader is tuned (docs/dataloader.md), beside what it reads: a block's
# settings of them are lines of their own in the phase's table and figures.
TUNING = ("allocator", "normalize", "collate")
PREFETCH_FACTOR = 2  # PyTorch's default, recorded
# A worker has at most PREFETCH_FACTOR batches in flight, and the consumer holds one more.
POOL_SLOTS = PREFETCH_FACTOR + 1
_FROM_WORKER = re.compile(r"Caught \w+ in DataLoader worker process (\d+)")


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


class _Indices:
    """A sampler whose indices can be swapped between epochs (the warm-up, then all n)."""

    def __init__(self):
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _worker_init(worker_id: int) -> None:
    import torch

    end_on_sigterm()  # the trial's SIGTERM handler would let a worker told to end live on
    torch.set_num_threads(1)  # one core per worker: normalisation must not fan out


class _WorkerStart:
    """The DataLoader's ``worker_init_fn``: :func:`_worker_init`, then the trial's allocator
    (imgread.decoders.allocator; given by name, so that it holds whatever the start method), then
    what the worker has put on ``report`` (a SimpleQueue the trial's process reads)."""

    def __init__(self, allocator_name: str, report):
        self.allocator_name, self.report = allocator_name, report

    def __call__(self, worker_id: int) -> None:
        import torch

        _worker_init(worker_id)
        allocator.apply(self.allocator_name)
        self.report.put((worker_id, torch.get_num_threads(), allocator.settings()))


def _stop_broken(it) -> None:
    """Stop a DataLoader iterator one of whose workers died, in bounded time (PyTorch's own
    shutdown sets an Event whose lock the dead worker may hold, and waits 5 s for each survivor
    stuck on a queue lock it held): stop watching the workers (PyTorch's SIGCHLD handler would
    raise for each one killed here), kill them all, remove a batch's shared memory one killed
    mid-batch left (torch_<pid>_*, unlinked once mapped), close the queues without waiting."""
    from torch.utils.data._utils import signal_handling

    it._shutdown = True  # PyTorch's own shutdown (and __del__) then does nothing
    if it._worker_pids_set:
        signal_handling._remove_worker_pids(id(it))
        it._worker_pids_set = False
    kill_all(it._workers)
    for w in it._workers:
        for segment in Path("/dev/shm").glob(f"torch_{w.pid}_*"):
            segment.unlink(missing_ok=True)
    if hasattr(it, "_pin_memory_thread"):
        it._pin_memory_thread_done_event.set()  # a daemon thread: it ends at its next check
    for q in [*it._index_queues, it._worker_result_queue]:
        q.cancel_join_thread()
    for q in it._index_queues:
        q.close()


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in bytes; 0 where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class LoaderRunner(Runner):
    """A DataLoader with persistent workers, warmed up by a short epoch before the clock."""

    def __init__(self, workers: int, params: dict, jobs, manifest, inputs: dict):
        import torch
        from torch.utils.data import DataLoader

        n = len(jobs)
        batch = int(params["batch_size"])
        source = params["source"]
        self.concurrency = max(workers, 1)
        self.normalize = params["normalize"]
        self.collate = PooledCollate(batch, workers) if params["collate"] == "pooled" else None
        self.pool_misses = 0
        self.cache_load_seconds = 0.0
        self.pin_requested = params["pin_memory"] == "true"
        self.pin_effective = self.pin_requested and torch.cuda.is_available()
        cache_dir = inputs.get("cache_dir")
        tensors = None
        if source == "cache-pickle":  # the seed loads its pickle before building the loader
            t0 = time.perf_counter()
            with open(Path(cache_dir) / decoded_cache.PICKLE_NAME, "rb") as fh:
                tensors = pickle.load(fh)
            self.cache_load_seconds = time.perf_counter() - t0
        root = manifest.root
        labels = decoded_cache.labels(manifest)[:n]
        self.shards = None
        if source == "shards":  # an IterableDataset: webdataset's pipeline over the shards
            urls = shardsrc.shard_urls(root, int(params["shard_mb"]), n, manifest.dataset_id)
            self.shards = shardsrc.ShardSamples(urls, n, params["decoder"])
            self.dataset = None
        else:
            self.dataset = ManifestDataset(
                [j.path for j in jobs],
                labels,
                params["decoder"],
                source,
                cache_dir,
                tensors,
                self.normalize,
            )
        opener = inputs.get("opener")
        if opener is not None and not opener.local_files:  # each worker its own connection
            if self.shards is not None:
                self.shards.opener = opener
            else:
                self.dataset.opener = opener
        if tensors is not None:
            self.dataset.keys = [str(Path(j.path).relative_to(root)) for j in jobs]
        # The allocator here too: this process collates (num_workers 0), normalises the
        # batches (normalize batch) and maps the workers' batches.
        warm_up(params["decoder"], "crop224", params["allocator"])
        torch.set_num_threads(1)
        self.worker_report, self.worker_states = None, []
        init = None
        if workers:  # their sockets' folder, made here: it goes with this process, even if a
            mp_util.get_temp_dir()  # worker is killed (a worker's own would stay in /tmp)
            self.worker_report = mp.get_context().SimpleQueue()
            init = _WorkerStart(params["allocator"], self.worker_report)
        self.sampler = _Indices() if self.shards is None else None
        self.loader = DataLoader(
            self.shards.pipeline() if self.shards is not None else self.dataset,
            batch_size=batch,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.pin_requested,
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
            worker_init_fn=init,
            **({"collate_fn": self.collate} if self.collate is not None else {}),
        )
        # Warm-up: one batch per worker (every worker started, its decoder imported); from
        # shards, one shard per worker.
        self._plan(min(n, batch * max(workers, 1)), max(workers, 1))
        try:
            self._epoch()
        except BaseException:
            self.close()
            raise
        # Every worker started (each made a batch of the warm-up) and reported what it has.
        while self.worker_report is not None and not self.worker_report.empty():
            self.worker_states.append(self.worker_report.get())
        self._plan(n, None)
        self.batches = math.ceil(n / batch)
        self.batches_per_worker_min = self.batches // workers if workers else self.batches
        self.iterator_seconds = self.first_batch_seconds = float("nan")

    def _plan(self, samples: int, shards: int | None) -> None:
        """What the next epoch reads: its first ``samples`` indices, or from shards its first
        ``shards`` shards (None: all of them)."""
        if self.shards is None:
            self.sampler.indices = list(range(samples))
        else:
            count = len(self.shards.urls)
            self.shards.limit.value = count if shards is None else min(shards, count)

    def _epoch(self) -> list:
        try:
            out = []
            t0 = time.perf_counter()
            it = iter(self.loader)
            t1 = time.perf_counter()
            for batch in it:
                if self.normalize == "batch":
                    images, labels = normalize_batch(batch[0]), batch[1]
                    if self.collate is not None:  # normalised (copied), then handed back
                        labels = labels.clone()
                        self.collate.release(batch)
                    batch = [images, labels]
                if not out:
                    self.first_batch_seconds = time.perf_counter() - t0
                out.append(batch)
            self.iterator_seconds = t1 - t0
            return out
        except ImageDecodeError as exc:  # re-raised by torch with the worker's traceback
            lines = [x for x in str(exc).splitlines() if x.strip()]
            raise ImageDecodeError(lines[-1].split("ImageDecodeError: ", 1)[-1]) from None
        except Exception as exc:
            cause = self._death(exc)
            if cause is None:
                raise
            raise WorkerDied(cause) from exc

    def _workers(self) -> list:
        return list(getattr(getattr(self.loader, "_iterator", None), "_workers", []))

    def _death(self, exc: Exception, wait: float = 1.0) -> str | None:
        """What a worker raised (re-raised here: "Caught E in DataLoader worker process I."), or
        why one died: waited for up to ``wait`` s, as a death can show first as another error
        (a batch's memory not fetched from the dying worker: connection reset)."""
        workers = self._workers()
        found = _FROM_WORKER.search(str(exc))
        if found and int(found[1]) < len(workers):
            last = [x.strip() for x in str(exc).splitlines() if x.strip()][-1]
            return f"DataLoader worker process {workers[int(found[1])].pid} raised {last}"
        deadline = time.monotonic() + wait
        while (cause := death_of(workers, "DataLoader worker process")) is None:
            if time.monotonic() >= deadline:
                break
            try:
                time.sleep(0.01)
            except RuntimeError:  # PyTorch's SIGCHLD handler, raising here: a worker ended
                pass
        return cause

    def died(self, exc):
        # PyTorch: "DataLoader worker (pid N) is killed by signal: ..." / "... exited
        # unexpectedly", raised by the loader or by its SIGCHLD handler.
        return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)

    def run(self, jobs):
        if self.collate is None:
            return self._epoch()
        before = int(self.collate.misses.sum())
        try:
            return self._epoch()
        finally:
            self.pool_misses = int(self.collate.misses.sum()) - before

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers()]

    def fields(self) -> dict:
        import torch

        return {
            "torch": torch.__version__,
            "first_batch_seconds": self.first_batch_seconds,
            "iterator_seconds": self.iterator_seconds,
            "cache_load_seconds": self.cache_load_seconds,
            "batches": self.batches,
            "batches_per_worker_min": self.batches_per_worker_min,
            "pin_memory_effective": self.pin_effective,
            "persistent_workers": self.loader.persistent_workers,
            "prefetch_factor": PREFETCH_FACTOR if self.loader.num_workers else 0,
            **self._shard_fields(),
            **self._pool_fields(),
            # the workers' peak resident sets, read while they are alive
            "peak_rss_workers_bytes": sum(_peak_rss(pid) for pid in self.worker_pids()),
            # what the workers had once started (the most torch threads of any, and every
            # distinct allocator setting); 0 and "" with num_workers 0
            "worker_torch_threads": max((s[1] for s in self.worker_states), default=0),
            "worker_allocator_settings": " | ".join(sorted({s[2] for s in self.worker_states})),
        }

    def _pool_fields(self) -> dict:
        if self.collate is None:
            return {}
        workers = self.loader.num_workers
        return {
            "collate_slots": self.collate.slots,
            "collate_pool_bytes": self.collate.pool_bytes((3, CROP, CROP), workers),
            # batches of the timed epoch collated into fresh memory: no buffer was free
            "collate_pool_misses": self.pool_misses,
        }

    def _shard_fields(self) -> dict:
        if self.shards is None:
            return {}
        return {
            "shards_read": len(self.shards.urls),
            "shuffle_buffer": self.shards.shuffle_buffer,
            "shard_shuffle": "webdataset.detshuffle (seed 0 + epoch), then split_by_worker",
        }

    def close(self):
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            if death_of(it._workers) is None:
                it._shutdown_workers()
            else:
                _stop_broken(it)
        self.loader._iterator = None
        if self.worker_report is not None:
            self.worker_report.close()
            self.worker_report = None


def _verify_shuffled(results, root, entries, params, ref, labels) -> dict:
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


def _manifest_of(path):
    from imgread.dataset.manifest import read_manifest

    return read_manifest(path)


class DataLoaderPhase(base.Phase):
    name = "dataloader"
    description = "feed a PyTorch DataLoader: decode + 224 crop + normalise, batched"
    baseline = ("torch", 1)  # the ideal line: the num_workers=1 rate x min(workers, cores)
    job_keys = ("batch_size", "page_cache", "storage")
    # in the training process (no IPC) or one worker process: whichever is faster
    one_core = (("torch", 0), ("torch", 1))
    tables = (
        base.Table(
            "dataloader_workers.csv",
            "imgread.phases.dataloader.tables:dataloader_workers",
            caption=True,
        ),
    )
    figures = {
        "dataloader_scaling": "imgread.phases.dataloader.figures:dataloader_scaling",
        "dataloader_first_batch": "imgread.phases.dataloader.figures:dataloader_first_batch",
        "dataloader_cache": "imgread.phases.dataloader.figures:dataloader_cache",
        "memory_dataloader": "imgread.answer.figures.memory:memory_vs_workers",
        "storage_dataloader": "imgread.answer.figures.storage:by_storage",
        "dataloader_shards": "imgread.phases.dataloader.figures:dataloader_shards",
    }
    params = (
        base.Param("decoder", "pillow", tuple(DECODERS), "decoder of imgread.decoders"),
        base.Param(
            "source", "jpeg", SOURCES, "jpeg, a decoded cache (npy or pickle), or tar shards"
        ),
        base.Param("batch_size", "32", None, "samples per batch"),
        base.Param("page_cache", "warm", ("cold", "warm"), "page-cache state at the start"),
        base.Param("pin_memory", "false", ("false", "true"), "DataLoader(pin_memory=...)"),
        base.STORAGE,
        base.SHARD_MB,
        base.Param(
            "allocator",
            "default",
            allocator.ALLOCATORS,
            "default: as the libraries set it; tuned: buffers kept for the next image",
        ),
        base.Param(
            "normalize",
            "item",
            NORMALIZE,
            "item: float32 samples (normalised in the Dataset); batch: uint8 samples, each "
            "batch normalised by the training process",
        ),
        base.Param(
            "collate",
            "fresh",
            COLLATE,
            "fresh: default_collate, a new shared-memory batch each time; pooled: a few "
            "buffers per worker, reused once the training process hands them back",
        ),
    )
    bench = ("imgread.phases.dataloader.overhead_bench:bench_section",)  # make bench, section 11
    variants = {
        "torch": base.Variant(
            "torch",
            True,
            None,
            "torch.utils.data.DataLoader(num_workers=workers); 0 loads in the calling process",
            min_workers=0,
        )
    }

    def page_cache(self, params):
        return params["page_cache"]

    def reference(self, params):
        return params["decoder"], "crop224"

    def decoded_cache(self, params):
        return None if params["source"] in ("jpeg", "shards") else params["decoder"]

    def redundant(self, variant, params):
        # shard_mb is the shards source's key: other sources read no shard, shards need one
        packed = int(params.get("shard_mb", 0)) != 0
        return packed != (params["source"] == "shards") or super().redundant(variant, params)

    def unsupported(self, variant, params):
        if params["normalize"] == "batch" and params["source"] in ("cache-pickle", "shards"):
            return (
                f"dataloader source {params['source']} yields samples normalised one by one "
                "(cache-pickle: the seed's float32 tensors; shards: webdataset's map), so it "
                "takes normalize item only"
            )
        if params["collate"] == "pooled" and params["normalize"] != "batch":
            return (
                "dataloader collate pooled hands a batch's buffer back once the training "
                "process has normalised it into a batch of its own, so it takes normalize batch "
                "(with item the epoch keeps the collated batches themselves)"
            )
        if params["source"] == "cache-pickle" and params["page_cache"] == "cold":
            return (
                "dataloader source cache-pickle is loaded into memory before the epoch "
                "(cache_load_seconds), so its epoch reads no file and has no cold form: "
                "use page_cache warm"
            )
        if params["source"] not in ("jpeg", "shards") and params["storage"] != "local":
            return (
                f"dataloader source {params['source']} reads the decoded cache on this "
                "machine, not the dataset, so it takes storage local only"
            )
        return super().unsupported(variant, params)

    def cache_files(self, jobs, params, inputs):
        if params["source"] == "jpeg":
            return [j.path for j in jobs]
        if params["source"] == "shards":
            m = _manifest_of(inputs["manifest"])
            return shardsrc.shard_urls(m.root, int(params["shard_mb"]), len(jobs), m.dataset_id)
        name = (
            decoded_cache.NPY_NAME
            if params["source"] == "cache-npy"
            else (decoded_cache.PICKLE_NAME)
        )
        return [str(Path(inputs.get("cache_dir", ".")) / name)]

    def start(self, variant, workers, params, jobs, inputs):
        m = _manifest_of(inputs["manifest"])
        if params["source"] == "shards":
            shards = len(
                shardsrc.shard_urls(m.root, int(params["shard_mb"]), len(jobs), m.dataset_id)
            )
            if shards < workers:
                raise UserError(
                    f"dataloader source shards: {len(jobs)} images are {shards} shards of "
                    f"{params['shard_mb']} MB, fewer than the {workers} workers (webdataset "
                    "gives each worker whole shards: some would get none); use smaller "
                    "shards, more images or fewer workers"
                )
        if params["source"] not in ("jpeg", "shards"):
            if not inputs.get("cache_dir"):
                raise UserError(
                    f"source {params['source']} needs a decoded cache (--cache-dir DIR, made "
                    "by 'imgread cache build')"
                )
            decoded_cache.read_info(
                inputs.get("cache_dir", ""), m.dataset_id, params["decoder"], len(jobs)
            )
        return LoaderRunner(workers, params, jobs, m, inputs)

    def verify(self, results, root, entries, params, inputs):
        n = len(entries)
        t0 = time.perf_counter()
        reference = inputs.get("reference")
        if reference is None:
            ref = reference_checksums(root, entries, params["decoder"], "crop224")
        else:
            ref = read_reference(reference, root, params["decoder"], "crop224")
        labels = decoded_cache.labels(_manifest_of(root))[:n]
        if params["source"] == "shards":
            extra = _verify_shuffled(results, root, entries, params, ref, labels)
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
        batch = int(params["batch_size"])
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

    def record_fields(self, params):
        return dict(
            params,
            decoder_version=DECODERS[params["decoder"]].version(),
            allocator_settings=allocator.settings(),  # what the trial's own process had
        )
