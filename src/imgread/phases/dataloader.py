"""Phase ``dataloader``: feed a PyTorch model through ``torch.utils.data.DataLoader``.

Each sample is a decoder's 224 crop as a float32 3 x 224 x 224 tensor normalised with the
seed's ``Normalize((0.5,)*3, (0.5,)*3)``, and its label (ImageFolder's: the first folder level
of a sampled source, else one class). The Dataset holds only a list of paths and labels, so
the workers that fork from it copy nothing large on read.

Grid keys: ``decoder``; ``source`` (``jpeg``: decode every epoch; ``cache-npy``: the uint8
crops of a decoded cache, ``np.load(mmap_mode="r")``; ``cache-pickle``: the seed's pickle of
preprocessed tensors, loaded into memory before the epoch); ``batch_size``; ``page_cache``
(cold: the files the epoch reads are evicted and proven cold; warm); ``pin_memory``.

Timing: the DataLoader is built and one short warm-up epoch run before the clock (its workers
are persistent, so the timed epoch finds them started, the decoder imported):
``startup_seconds``. The timed epoch runs from ``iter(loader)`` to the last batch
(``seconds``), with the time to the first batch beside it (``first_batch_seconds``).
"""

from __future__ import annotations

import math
import pickle
import re
import signal
import time
from multiprocessing import util as mp_util
from pathlib import Path

import numpy as np

from imgread import allocator, decoded_cache
from imgread.decoders import CROP, DECODERS, checksum, warm_up
from imgread.errors import ImageDecodeError, UserError, VerificationError
from imgread.phases import base
from imgread.pools import Runner, WorkerDied, death_of, kill_all
from imgread.reference import read_reference, reference_checksums

SOURCES = ("jpeg", "cache-npy", "cache-pickle")
PREFETCH_FACTOR = 2  # PyTorch's default, recorded
_FROM_WORKER = re.compile(r"Caught \w+ in DataLoader worker process (\d+)")


class ManifestDataset:
    """ImageFolder's equivalent over a manifest: ``(tensor, label)`` per index.

    Only paths and labels live here (and, for ``cache-pickle``, the loaded tensors, as the seed
    does); the ``.npy`` cache is mapped read-only for each sample.
    """

    def __init__(self, paths, labels, decoder, source, cache_dir=None, tensors=None):
        self.paths, self.labels = list(paths), [int(x) for x in labels]
        self.decoder, self.source, self.cache_dir = decoder, source, cache_dir
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
        return torch.from_numpy(decoded_cache.normalize(chw)), self.labels[i]


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

    # The trial's SIGTERM handler (SystemExit) would let a worker told to end live on.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)  # one core per worker: normalisation must not fan out
    # The trial process's allocator setting (imgread.allocator), whatever the start method.
    allocator.apply(allocator.current())


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
        self.dataset = ManifestDataset(
            [j.path for j in jobs], labels, params["decoder"], source, cache_dir, tensors
        )
        opener = inputs.get("opener")
        if opener is not None and not opener.local_files:
            self.dataset.opener = opener  # each worker opens its own connection
        if tensors is not None:
            self.dataset.keys = [str(Path(j.path).relative_to(root)) for j in jobs]
        warm_up(params["decoder"], "crop224")
        torch.set_num_threads(1)
        if workers:  # their sockets' folder, made here: it goes with this process, even if a
            mp_util.get_temp_dir()  # worker is killed (a worker's own would stay in /tmp)
        self.sampler = _Indices()
        self.loader = DataLoader(
            self.dataset,
            batch_size=batch,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.pin_requested,
            persistent_workers=workers > 0,
            prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
        )
        # Warm-up: one batch per worker (every worker started, its decoder imported).
        self.sampler.indices = list(range(min(n, batch * max(workers, 1))))
        try:
            self._epoch()
        except BaseException:
            self.close()
            raise
        self.sampler.indices = list(range(n))
        self.batches = math.ceil(n / batch)
        self.batches_per_worker_min = self.batches // workers if workers else self.batches
        self.iterator_seconds = self.first_batch_seconds = float("nan")

    def _epoch(self) -> list:
        try:
            out = []
            t0 = time.perf_counter()
            it = iter(self.loader)
            t1 = time.perf_counter()
            for batch in it:
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
        return self._epoch()

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
            # the workers' peak resident sets, read while they are alive
            "peak_rss_workers_bytes": sum(_peak_rss(pid) for pid in self.worker_pids()),
        }

    def close(self):
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            if death_of(it._workers) is None:
                it._shutdown_workers()
            else:
                _stop_broken(it)
        self.loader._iterator = None


def _manifest_of(path):
    from imgread.manifest import read_manifest

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
            "dataloader_workers.csv", "imgread.tables.dataloader:dataloader_workers", caption=True
        ),
    )
    figures = {
        "dataloader_scaling": "imgread.figures.dataloader:dataloader_scaling",
        "dataloader_first_batch": "imgread.figures.dataloader:dataloader_first_batch",
        "dataloader_cache": "imgread.figures.dataloader:dataloader_cache",
        "memory_dataloader": "imgread.figures.memory:memory_vs_workers",
        "storage_dataloader": "imgread.figures.storage:by_storage",
    }
    params = (
        base.Param("decoder", "pillow", tuple(DECODERS), "decoder of imgread.decoders"),
        base.Param("source", "jpeg", SOURCES, "jpeg, or a decoded cache (npy or pickle)"),
        base.Param("batch_size", "32", None, "samples per batch"),
        base.Param("page_cache", "warm", ("cold", "warm"), "page-cache state at the start"),
        base.Param("pin_memory", "false", ("false", "true"), "DataLoader(pin_memory=...)"),
        base.STORAGE,
    )
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
        return None if params["source"] == "jpeg" else params["decoder"]

    def unsupported(self, variant, params):
        if params["source"] == "cache-pickle" and params["page_cache"] == "cold":
            return (
                "dataloader source cache-pickle is loaded into memory before the epoch "
                "(cache_load_seconds), so its epoch reads no file and has no cold form: "
                "use page_cache warm"
            )
        if params["source"] != "jpeg" and params["storage"] != "local":
            return (
                f"dataloader source {params['source']} reads the decoded cache on this "
                "machine, not the dataset, so it takes storage local only"
            )
        return super().unsupported(variant, params)

    def cache_files(self, jobs, params, inputs):
        if params["source"] == "jpeg":
            return [j.path for j in jobs]
        name = (
            decoded_cache.NPY_NAME
            if params["source"] == "cache-npy"
            else (decoded_cache.PICKLE_NAME)
        )
        return [str(Path(inputs.get("cache_dir", ".")) / name)]

    def start(self, variant, workers, params, jobs, inputs):
        m = _manifest_of(inputs["manifest"])
        if params["source"] != "jpeg":
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
        return dict(params, decoder_version=DECODERS[params["decoder"]].version())
