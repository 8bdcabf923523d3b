"""The ``litdata`` pipeline: Lightning's LitData as its users run it. The trial's images are
``litdata.optimize``-d once into chunks of ``shard_mb`` MB (imgread.dataset.litdata_chunks,
beside the tar shards; made or reused before any clock), read back by a ``StreamingDataset``
subclass that decodes each sample in ``__getitem__`` with Pillow and torchvision's
``Resize(256) + CenterCrop(224) + ToTensor() + Normalize`` (LitData's collate cannot batch
JPEG bytes of different lengths), through a ``StreamingDataLoader(batch_size,
num_workers=workers)`` with persistent workers.

Before the clock: the chunks made or found (``chunks_seconds``: 0 where reused), the loader
built over a per-trial empty ``cache_dir``, and a warm-up of one batch per worker (workers
started, litdata and torchvision imported). Timed: one epoch, every one of the n samples once
(``shuffle=False``, ``drop_last=False``: the check after the clock counts them). The key of
each sample is its manifest position, stored in the chunk beside the image and carried out by
``__getitem__``. LitData reads a local input folder in place (its ``cache_dir`` stays empty:
``cache_dir_files``), so a cold trial evicts the chunk files themselves (``chunk_files``).

On an http profile with TLS the dataset is ``s3://<bucket>/<chunk folder>`` read by LitData's
own S3 reader (boto3 for the index, obstore for the chunks) from the session's emulated store,
unsigned, the environment isolated as for the S3 clients; the warm-up is a whole epoch, after
which the downloaded chunks are removed from ``cache_dir``, so that the timed epoch downloads
every chunk (``litdata_downloaded_bytes``). Plain http cannot be read (docs/pipelines/litdata.md).
"""

from __future__ import annotations

import io
import multiprocessing as mp
import shutil
import tempfile
import time
from multiprocessing import util as mp_util
from pathlib import Path

from imgread.dataset import litdata_chunks
from imgread.errors import UserError
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.consumer import Consumer, batch_len
from imgread.phases.dataloader.pipelines.torch_loader import _peak_rss
from imgread.storage.clients.base import Endpoint, key_of
from imgread.storage.clients.s3env import isolate
from imgread.storage.http.server import BUCKET, REGION
from imgread.trial.pools import Runner, death_of, kill_all
from imgread.util import end_on_sigterm

SHUFFLE = False  # an evaluation pass, as the transform is the eval one; no seed to record
MADE: dict[str, litdata_chunks.Chunks] = {}  # what this process made (the hook runs first)


def chunks_of(ctx) -> litdata_chunks.Chunks:
    """The trial's chunks, made where they are not yet (what this process made is kept, so
    that the record says made even where the phase's hook made them before the runner)."""
    chunks = litdata_chunks.ensure(ctx.manifest, len(ctx.jobs), int(ctx.params["shard_mb"]))
    key = str(chunks.folder)
    if chunks.made or key not in MADE:
        MADE[key] = chunks
    return MADE[key]


def chunk_files(ctx) -> list[str]:
    """The files the epoch reads (Pipeline.cache_files): litdata's index and chunks."""
    return chunks_of(ctx).files()


def _transform():
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )


def _dataset_class():
    """The StreamingDataset subclass a LitData user writes: decode in ``__getitem__``."""
    import litdata
    from PIL import Image

    class ImageChunks(litdata.StreamingDataset):
        def __init__(self, *args, park=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.transform_ = _transform()
            self.park = park

        def __iter__(self):
            if self.park is not None and self.park.value:
                _unmap(self)
                return iter(())
            return super().__iter__()

        def __getitem__(self, index):
            item = super().__getitem__(index)
            image = Image.open(io.BytesIO(item["image"])).convert("RGB")
            return self.transform_(image), item["label"], item["index"]

    return ImageChunks


def _unmap(dataset) -> None:
    """Close the chunk mappings the warm-up left in this process: LitData mmaps local chunks
    in place and keeps them mapped between epochs, and a mapped page is not evicted (a cold
    trial could not be proven cold). Its item loader's own release, as at its ``__del__``."""
    cache = getattr(dataset, "cache", None)
    loader = getattr(getattr(cache, "_reader", None), "_item_loader", None)
    close = getattr(loader, "_close_open_chunk", None)
    if close is not None:
        close()
    dataset.cache = None  # the next epoch's __iter__ makes its own, as every epoch does


class Remote:
    """LitData's own S3 reader pointed at the trial's emulated store (kind http with TLS): the
    chunks' ``s3://`` URL, the ``storage_options`` of its boto3 client, and the trial's
    environment isolated (empty HOME and AWS config, unsigned; put back by :meth:`close`)."""

    def __init__(self, ctx, folder: Path, home: Path):
        opener = ctx.opener
        name = ctx.params.get("storage", "?")
        if not getattr(opener, "base_url", "").startswith("https://"):
            raise UserError(
                f"dataloader/litdata: storage {name} is plain http, which LitData 0.2.76 cannot "
                "read: its obstore chunk reader is built with client_options of its own "
                "(litdata/streaming/downloader.py _build_obstore_s3_store), which drop "
                "allow_http; use a profile with tls: true, or storage local"
            )
        sdk = home / "sdk"
        (sdk / "home").mkdir(parents=True)
        for empty in ("empty.config", "empty.creds"):
            (sdk / empty).write_bytes(b"")
        self.endpoint = Endpoint(
            name, "http", opener.base_url, opener.address, opener.port, opener.root,
            opener.cafile, opener.policy, BUCKET, REGION, str(sdk),
        )  # fmt: skip
        self.url = f"s3://{BUCKET}/{key_of(opener.root, str(folder))}"
        self.isolated = isolate(self.endpoint)

    def storage_options(self) -> dict:
        """boto3's client options (LitData's S3Client passes them to ``session.client``):
        the IP-literal endpoint, the region, path style, unsigned (no credential lookup)."""
        import botocore
        from botocore.config import Config

        config = Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"})
        return {"endpoint_url": self.endpoint.base_url, "region_name": REGION, "config": config}

    def close(self) -> None:
        """Put the trial's environment back."""
        self.isolated.restore()


def _downloads(cache_dir: str, pattern: str = "chunk-*.bin") -> list[Path]:
    """The chunks LitData has downloaded into ``cache_dir`` (``chunk-*``: with their locks
    and partial downloads)."""
    return [p for p in Path(cache_dir).rglob(pattern) if p.is_file()]


class _WorkerStart:
    """``worker_init_fn``: one torch thread per worker, ended by SIGTERM, reported."""

    def __init__(self, report):
        self.report = report

    def __call__(self, worker_id: int) -> None:
        import torch

        end_on_sigterm()
        torch.set_num_threads(1)
        self.report.put((worker_id, torch.get_num_threads()))


class LitDataRunner(Runner):
    """A StreamingDataLoader over the trial's chunks, warmed up by one batch per worker."""

    def __init__(self, ctx):
        import litdata
        import torch

        workers, batch = ctx.workers, int(ctx.params["batch_size"])
        self.concurrency = max(workers, 1)
        self.chunks = chunks_of(ctx)
        self.home = Path(tempfile.mkdtemp(prefix="imgread-litdata-"))
        self.cache_dir = str(self.home / "cache")
        self.remote = self.downloaded = None
        remote = ctx.opener is not None and not getattr(ctx.opener, "local_files", False)
        torch.set_num_threads(1)  # the trial's process collates (num_workers 0) and maps
        self.pin_requested = ctx.params["pin_memory"] == "true"
        self.consumer = Consumer.of(ctx.params)  # the simulated accelerator (accel_rate)
        self.worker_report, self.worker_states = None, []
        init = None
        if workers:  # their sockets' folder made here: it goes with this process
            mp_util.get_temp_dir()
            self.worker_report = mp.get_context().SimpleQueue()
            init = _WorkerStart(self.worker_report)
        # 1 for an epoch that only releases the warm-up's mappings (in every worker): shared
        # memory made before the workers fork, so that persistent workers see it
        self.park = mp.get_context("fork").Value("i", 0, lock=False)
        try:
            where, options = str(self.chunks.folder), {}
            if remote:
                self.remote = Remote(ctx, self.chunks.folder, self.home)
                where = self.remote.url
                options = {"storage_options": self.remote.storage_options()}
            self.dataset = _dataset_class()(
                where,
                cache_dir=self.cache_dir,
                shuffle=SHUFFLE,
                drop_last=False,
                park=self.park,
                **options,
            )
            self.loader = litdata.StreamingDataLoader(
                self.dataset,
                batch_size=batch,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=self.pin_requested,
                worker_init_fn=init,
            )
            # remote: a whole epoch, so that no download is still under way when the
            # downloaded chunks are removed (LitData skips a download whose file is there)
            self._warm_up(0 if remote else max(workers, 1))
            for path in _downloads(self.cache_dir, "chunk-*") if remote else ():
                path.unlink()
        except BaseException:
            self.close()
            raise
        while self.worker_report is not None and not self.worker_report.empty():
            self.worker_states.append(self.worker_report.get())
        self.first_batch_seconds = self.iterator_seconds = float("nan")

    def _warm_up(self, batches: int) -> None:
        """``batches`` batches (0: the whole epoch), the epoch left there (the next ``iter``
        starts afresh), then an empty epoch in which each worker closes its chunk mappings."""
        for i, _ in enumerate(self.loader):
            if batches and i + 1 >= batches:
                break
        self.park.value = 1
        try:
            if any(True for _ in self.loader):
                raise RuntimeError("litdata: the epoch that closes the mappings yielded a batch")
        finally:
            self.park.value = 0

    def run(self, jobs):
        out = []
        with self.consumer.epoch():
            t0 = time.perf_counter()
            it = iter(self.loader)
            t1 = time.perf_counter()
            for images, labels, keys in self.consumer.feed(it, batch_len):
                if not out:
                    self.first_batch_seconds = time.perf_counter() - t0
                out.append((images.numpy(), labels.numpy(), keys.numpy()))
        self.iterator_seconds = t1 - t0
        if self.remote is not None:  # what the epoch downloaded (the warm-up's were removed)
            self.downloaded = _downloads(self.cache_dir)
        return out

    def _workers(self) -> list:
        return list(getattr(getattr(self.loader, "_iterator", None), "_workers", []))

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers()]

    def died(self, exc):
        return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)

    def fields(self) -> dict:
        import litdata
        import torch

        return {
            "pipeline_versions": PIPELINE.versions(),
            "litdata": litdata.__version__,
            "pipeline_decoder": "PIL.Image.open + torchvision Resize(256) CenterCrop(224) "
            "ToTensor Normalize, in StreamingDataset.__getitem__",
            "litdata_chunks": len(self.chunks.chunks),
            "litdata_chunk_bytes": self.chunks.bytes,
            "litdata_chunks_made": self.chunks.made,
            "chunks_seconds": self.chunks.seconds,
            "litdata_chunk_dir": str(self.chunks.folder),
            "litdata_cache_dir": self.cache_dir,
            # LitData reads a local input folder in place: nothing lands in its cache
            "litdata_cache_dir_files": sum(
                1 for p in Path(self.cache_dir).rglob("*") if p.is_file()
            ),
            "litdata_remote_url": self.remote.url if self.remote else "",
            "litdata_reader": "s3: boto3 index, obstore chunks" if self.remote else "local",
            "litdata_downloaded_chunks": len(self.downloaded or ()),
            "litdata_downloaded_bytes": sum(p.stat().st_size for p in self.downloaded or ()),
            "litdata_shuffle": SHUFFLE,
            "litdata_drop_last": False,
            "num_workers": self.loader.num_workers,
            "persistent_workers": self.loader.persistent_workers,
            "prefetch_factor": self.loader.prefetch_factor or 0,
            "pin_memory_effective": self.pin_requested and torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads(),
            "worker_torch_threads": max((s[1] for s in self.worker_states), default=0),
            "first_batch_seconds": self.first_batch_seconds,
            "iterator_seconds": self.iterator_seconds,
            "peak_rss_workers_bytes": sum(_peak_rss(pid) for pid in self.worker_pids()),
            **self.consumer.fields(),
        }

    def close(self):
        loader = getattr(self, "loader", None)
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            if death_of(it._workers) is None:
                it._shutdown_workers()
            else:
                it._shutdown = True
                kill_all(it._workers)
        if loader is not None:
            loader._iterator = None
        if getattr(self, "dataset", None) is not None:
            _unmap(self.dataset)  # this process's mappings (num_workers 0): the next trial's
            # chunks would otherwise stay resident for as long as this runner lives
        if self.worker_report is not None:
            self.worker_report.close()
            self.worker_report = None
        if getattr(self, "remote", None) is not None:
            self.remote.close()
            self.remote = None
        shutil.rmtree(self.home, ignore_errors=True)


PIPELINE = Pipeline(
    "litdata",
    "litdata.StreamingDataLoader(num_workers=workers) over litdata.optimize chunks of "
    "shard_mb MB, each sample decoded in StreamingDataset.__getitem__ (PIL + torchvision)",
    "imgread.phases.dataloader.pipelines.litdata_stream:LitDataRunner",
    imports=("litdata", "torch", "torchvision", "PIL"),
    distributions=("litdata", "torch", "torchvision", "pillow"),
    allowed={
        "decoder": ("pillow",),
        "source": ("shards",),
        "normalize": ("item",),
        "collate": ("fresh",),
        "allocator": ("default",),
        "client": ("imgread",),  # LitData reads an object store with its own S3 reader
    },
    min_workers=0,
    layout="NCHW",
    reads="litdata chunks of the trial's images (imgread.dataset.litdata_chunks), read in place "
    "(local) or downloaded by LitData's own S3 reader into its cache_dir (http with TLS)",
    cache_files="imgread.phases.dataloader.pipelines.litdata_stream:chunk_files",
)
