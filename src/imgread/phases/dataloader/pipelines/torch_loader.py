"""The DataLoader phase's own pipeline, ``torch``: a ``torch.utils.data.DataLoader`` with
persistent workers over the trial's samples (imgread.phases.dataloader.dataset, or the tar shards of
imgread.phases.dataloader.shards), built and warmed up by a short epoch before the clock; then
one timed epoch. A worker's death or error becomes the trial's (imgread.trial.pools)."""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import re
import time
from multiprocessing import util as mp_util
from pathlib import Path

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP, allocator, warm_up
from imgread.errors import ImageDecodeError
from imgread.phases.dataloader import decoded_cache
from imgread.phases.dataloader import shards as shardsrc
from imgread.phases.dataloader.collate import PREFETCH_FACTOR, PooledCollate, normalize_batch
from imgread.phases.dataloader.dataset import ManifestDataset
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.consumer import Consumer, batch_len
from imgread.trial.pools import Runner, WorkerDied, death_of, kill_all
from imgread.util import end_on_sigterm

_FROM_WORKER = re.compile(r"Caught \w+ in DataLoader worker process (\d+)")


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

    def __init__(self, ctx):
        import torch

        params, workers, n = ctx.params, ctx.workers, len(ctx.jobs)
        batch = int(params["batch_size"])
        self.concurrency = max(workers, 1)
        self.normalize = params["normalize"]
        self.collate = PooledCollate(batch, workers) if params["collate"] == "pooled" else None
        self.pool_misses = 0
        # page_cache limited's epochs keep what this makes of each batch, not the batch
        # (imgread.trial.epochs: the pixels' sums; the epoch's results held would be cache)
        self.reduce = None
        self.cache_load_seconds = 0.0
        self.pin_requested = params["pin_memory"] == "true"
        self.pin_effective = self.pin_requested and torch.cuda.is_available()
        self.consumer = Consumer.of(params)  # the simulated accelerator (accel_rate)
        self.shards, self.dataset = self._samples(ctx)
        # The allocator here too: this process collates (num_workers 0), normalises the
        # batches (normalize batch) and maps the workers' batches.
        warm_up(params["decoder"], "crop224", params["allocator"])
        torch.set_num_threads(1)
        self.loader = self._loader(workers, batch, params["allocator"])
        self._warm_up(n, batch, workers)

    def _samples(self, ctx):
        """(shards, dataset): what the loader iterates, one of the two None; the cache-pickle
        source's tensors loaded first (as the seed does, timed: ``cache_load_seconds``)."""
        params, jobs, n = ctx.params, ctx.jobs, len(ctx.jobs)
        source = params["source"]
        tensors = None
        if source == "cache-pickle":  # the seed loads its pickle before building the loader
            t0 = time.perf_counter()
            with open(Path(ctx.cache_dir) / decoded_cache.PICKLE_NAME, "rb") as fh:
                tensors = pickle.load(fh)
            self.cache_load_seconds = time.perf_counter() - t0
        shards = dataset = None
        if source == "shards":  # an IterableDataset: webdataset's pipeline over the shards
            urls = shardsrc.shard_urls(ctx.root, int(params["shard_mb"]), n, ctx.dataset_id)
            shards = shardsrc.ShardSamples(urls, n, params["decoder"])
        else:
            dataset = ManifestDataset(
                [j.path for j in jobs],
                class_labels(ctx.manifest)[:n],
                params["decoder"],
                source,
                ctx.cache_dir,
                tensors,
                self.normalize,
            )
        opener = ctx.opener
        if opener is not None and not opener.local_files:  # each worker its own connection
            (shards if shards is not None else dataset).opener = opener
        if tensors is not None:
            dataset.keys = [str(Path(j.path).relative_to(ctx.root)) for j in jobs]
        return shards, dataset

    def _loader(self, workers: int, batch: int, allocator_name: str):
        """The DataLoader, its workers reporting what they have once started."""
        from torch.utils.data import DataLoader

        self.worker_report, self.worker_states = None, []
        init = None
        if workers:  # their sockets' folder, made here: it goes with this process, even if a
            mp_util.get_temp_dir()  # worker is killed (a worker's own would stay in /tmp)
            self.worker_report = mp.get_context().SimpleQueue()
            init = _WorkerStart(allocator_name, self.worker_report)
        self.sampler = _Indices() if self.shards is None else None
        return DataLoader(
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

    def _warm_up(self, n: int, batch: int, workers: int) -> None:
        """One batch per worker (every worker started, its decoder imported; from shards, one
        shard per worker), then the timed epoch planned: all n."""
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
            for batch in self.consumer.feed(it, batch_len):  # stepped in the timed epoch only
                if self.normalize == "batch":
                    images, labels = normalize_batch(batch[0]), batch[1]
                    if self.collate is not None:  # normalised (copied), then handed back
                        labels = labels.clone()
                        self.collate.release(batch)
                    batch = [images, labels]
                if not out:
                    self.first_batch_seconds = time.perf_counter() - t0
                out.append(batch if self.reduce is None else self.reduce(batch))
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
        with self.consumer.epoch():
            if self.collate is None:
                return self._epoch()
            before = int(self.collate.misses.sum())
            try:
                return self._epoch()
            finally:
                self.pool_misses = int(self.collate.misses.sum()) - before

    def order(self, indices: list[int]) -> None:
        """The next epoch's order of the images (page_cache limited: a fresh shuffle each)."""
        self.sampler.indices = list(indices)

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
            **self.consumer.fields(),
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


PIPELINE = Pipeline(
    "torch",
    "torch.utils.data.DataLoader(num_workers=workers) over the project's own Dataset; "
    "0 loads in the calling process",
    "imgread.phases.dataloader.pipelines.torch_loader:LoaderRunner",
    imports=("torch",),
    distributions=("torch",),
    min_workers=0,
    exact=True,  # the project's own decoders: its samples are checked bit for bit
    reads="the trial's files, decoded cache or tar shards, through the project's opener",
)
