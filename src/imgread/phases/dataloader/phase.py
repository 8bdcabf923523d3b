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
(cold: the files the epoch reads are evicted and proven cold; warm; limited: cold, then
``epochs`` shuffled epochs in a memory cgroup that leaves ``cache_share`` of the data to the page
cache, imgread.trial.epochs and docs/limited.md); ``pin_memory``;
``allocator`` (imgread.decoders.allocator: default | tuned, given to the training process and to
every worker before the clock); ``normalize``, where the uint8 -> float32 normalisation runs:
- ``item`` (torchvision's ``ToTensor()`` + ``Normalize`` in the Dataset): each sample leaves
  the worker as float32, so a batch crosses to the training process at 4 bytes a pixel, through
  a shared-memory segment the worker allocates (and faults in) afresh for every batch;
- ``batch`` (uint8 samples collated as they are, the batch normalised by its consumer, as
  NVIDIA's ImageNet example does on the GPU): 1 byte a pixel crosses, and the training process
  normalises each batch as it takes it, inside the timed epoch. The float32 batches are the
  same to the bit (:func:`imgread.phases.dataloader.collate.normalize_batch`);
``collate``, how a batch is put together in a worker (with ``normalize batch``):
- ``fresh`` (PyTorch's ``default_collate``): every batch in a new shared-memory segment,
  allocated, faulted in and mapped again in the training process, and its file descriptor
  passed over a socket;
- ``pooled`` (:class:`imgread.phases.dataloader.collate.PooledCollate`): each worker stacks
  its batches into a few buffers of shared memory it made once (``PREFETCH_FACTOR + 1``),
  and the training process hands a buffer back once it has normalised (copied) its batch; a
  buffer still held is never written (the worker collates into fresh memory instead and
  counts it: ``collate_pool_misses``).
Both are recorded, with what the trial's process and its workers had (``allocator_settings``,
``worker_allocator_settings``, ``worker_torch_threads``); docs/dataloader.md says what each
costs a worker and why. ``ratio``: the ``tf-data`` pipeline's DCT-scaled decode
(docs/pipelines/tf-data.md); every other pipeline takes 1.

Timing: the DataLoader is built and one short warm-up epoch run before the clock (its workers
are persistent, so the timed epoch finds them started, the decoder imported):
``startup_seconds``. The timed epoch runs from ``iter(loader)`` to the last batch
(``seconds``), with the time to the first batch beside it (``first_batch_seconds``).
"""

from __future__ import annotations

from pathlib import Path

from imgread.decoders import DECODERS, allocator
from imgread.errors import UserError
from imgread.phases import base
from imgread.phases.dataloader import decoded_cache
from imgread.phases.dataloader import shards as shardsrc
from imgread.phases.dataloader.decoded_cache import PICKLE_NAME
from imgread.phases.dataloader.pipelines import consumer
from imgread.phases.dataloader.pipelines import registry as pipelines
from imgread.phases.dataloader.pipelines.check import verify_peer
from imgread.phases.dataloader.verify import verify_epoch

SOURCES = ("jpeg", "cache-npy", "cache-pickle", "shards")
NORMALIZE = ("item", "batch")
COLLATE = ("fresh", "pooled")
# page_cache limited's share of the data the cache may hold (0.2: MLPerf Storage's 5x rule)
CACHE_SHARES = ("0.05", "0.1", "0.2", "0.25", "0.5", "1")
# The grid keys of how a loader is tuned (docs/dataloader.md), beside what it reads: a block's
# settings of them are lines of their own in the phase's table and figures.
TUNING = ("allocator", "normalize", "collate")


LIMITED_KEYS = ("cache_share", "epochs")  # page_cache limited's own (imgread.trial.epochs)


class DataLoaderPhase(base.Phase):
    name = "dataloader"
    description = "feed a PyTorch DataLoader: decode + 224 crop + normalise, batched"
    # seed 000's own code: torchvision's ImageFolder in a DataLoader (recommendation's
    # x_imagefolder is the speedup over its best setting)
    starting_point = "torchvision-imagefolder"
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
        # page_cache limited: one row per trial and epoch (docs/limited.md)
        base.Table("limited.csv", "imgread.phases.dataloader.limited:limited_epochs"),
    )
    figures = {
        "dataloader_scaling": "imgread.phases.dataloader.figures:dataloader_scaling",
        "dataloader_first_batch": "imgread.phases.dataloader.figures:dataloader_first_batch",
        "dataloader_cache": "imgread.phases.dataloader.figures:dataloader_cache",
        "memory_dataloader": "imgread.answer.figures.memory:memory_vs_workers",
        "storage_dataloader": "imgread.answer.figures.storage:by_storage",
        "dataloader_shards": "imgread.phases.dataloader.figures:dataloader_shards",
        "dataloader_libraries": "imgread.phases.dataloader.libraries:dataloader_libraries",
        "dataloader_limited": "imgread.phases.dataloader.limited:dataloader_limited",
    }
    params = (
        base.Param("decoder", "pillow", tuple(DECODERS), "decoder of imgread.decoders"),
        base.Param(
            "source", "jpeg", SOURCES, "jpeg, a decoded cache (npy or pickle), or tar shards"
        ),
        base.Param("batch_size", "32", None, "samples per batch"),
        base.Param(
            "page_cache",
            "warm",
            ("cold", "warm", "limited"),
            "page-cache state at the start; limited: cold, then epochs in a memory cgroup "
            "leaving cache_share of the data cached (docs/limited.md)",
        ),
        base.Param("pin_memory", "false", ("false", "true"), "DataLoader(pin_memory=...)"),
        base.STORAGE,
        base.CLIENT,  # the storage client on http profiles (redundant on local)
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
        # a peer's own knob (tf-data: decode_jpeg's DCT ratio); a pipeline whose allowed
        # does not list it takes 1 only (unsupported)
        base.Param("ratio", "1", ("1", "2", "4", "8"), "tf-data: decode_jpeg(ratio=...)"),
        # the simulated accelerator every pipeline feeds (pipelines.consumer); 0: none
        base.Param(
            "accel_rate",
            "0",
            None,
            "images/s of a simulated accelerator that sleeps batch / rate after each batch "
            "(DLIO's training step); 0 - none",
            0,
            later=True,
        ),
        # page_cache limited's two keys (imgread.trial.epochs); left out of the trial paths at
        # their defaults (Param.later), so the cells made before them keep their paths
        base.Param(
            "cache_share",
            "0.2",
            CACHE_SHARES,
            "limited: the page cache left for the data, as a share of its bytes",
            later=True,
        ),
        base.Param(
            "epochs", "1", None, "limited: shuffled epochs, each timed (at least 2)", later=True
        ),
    )
    # The fastest simulated accelerator the pipeline keeps >= 90 % busy: first the trial
    # unloaded (accel_rate 0: the pipeline's own rate R0), then a search in [R0/32, R0],
    # halved from above.
    search_keys = {"accel_rate": consumer.ACCEL_SEARCH}
    bench = ("imgread.phases.dataloader.overhead_bench:bench_section",)  # make bench, section 11
    # One variant per pipeline (imgread.phases.dataloader.pipelines): the project's own
    # ``torch`` and the libraries users run, each one module.
    variants = {
        p.name: base.Variant(p.name, True, None, p.description, p.allowed, p.min_workers)
        for p in pipelines.pipelines().values()
    }

    def page_cache(self, params):
        # limited starts cold (evicted and proven), as a cold cell does
        return "cold" if params["page_cache"] == "limited" else params["page_cache"]

    def reference(self, params):
        return params["decoder"], "crop224"

    def decoded_cache(self, params):
        return None if params["source"] in ("jpeg", "shards") else params["decoder"]

    def redundant(self, variant, params):
        # shard_mb is the shards source's key: other sources read no shard, shards need one
        packed = int(params.get("shard_mb", 0)) != 0
        if params["page_cache"] != "limited" and _limited_keys_set(params):
            return True  # cache_share and epochs are limited's keys
        return packed != (params["source"] == "shards") or super().redundant(variant, params)

    def unsupported(self, variant, params):
        if params["ratio"] != "1" and "ratio" not in self.variants[variant].allowed:
            return f"dataloader/{variant} has no DCT-scaled decode: it takes ratio 1 only"
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
        if params["page_cache"] == "limited":
            why = _limited_refusal(variant, params)
            if why:
                return why
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

    def cache_files(self, ctx):
        params = ctx.params
        own = pipelines.get(ctx.variant).files(ctx)
        if own is not None:
            return own
        if params["source"] == "jpeg":
            return [j.path for j in ctx.jobs]
        if params["source"] == "shards":
            return self._shard_urls(ctx)
        name = decoded_cache.NPY_NAME if params["source"] == "cache-npy" else PICKLE_NAME
        return [str(Path(ctx.cache_dir or ".") / name)]

    def check(self, ctx):
        params, n = ctx.params, len(ctx.jobs)
        if params["source"] == "shards":
            shards = len(self._shard_urls(ctx))
            if shards < ctx.workers:
                raise UserError(
                    f"dataloader source shards: {n} images are {shards} shards of "
                    f"{params['shard_mb']} MB, fewer than the {ctx.workers} workers (webdataset "
                    "gives each worker whole shards: some would get none); use smaller "
                    "shards, more images or fewer workers"
                )
        if params["source"] not in ("jpeg", "shards"):
            if not ctx.cache_dir:
                raise UserError(
                    f"source {params['source']} needs a decoded cache (--cache-dir DIR, made "
                    "by 'imgread cache build')"
                )
            decoded_cache.read_info(ctx.cache_dir, ctx.dataset_id, params["decoder"], n)

    def missing(self, variant):
        return pipelines.get(variant).missing()

    def start(self, ctx):
        return pipelines.get(ctx.variant).runner(ctx)

    def verify(self, ctx, results):
        pipeline = pipelines.get(ctx.variant)
        if pipeline.exact:
            return verify_epoch(ctx, results)
        return verify_peer(ctx, results, pipeline.name, pipeline.layout)

    @staticmethod
    def _shard_urls(ctx) -> list[str]:
        mb = int(ctx.params["shard_mb"])
        return shardsrc.shard_urls(ctx.root, mb, len(ctx.jobs), ctx.dataset_id)

    def search_scale(self, key, value, config):
        if key != "accel_rate":
            return {}
        return consumer.scale(value, config.get("accelerators"))

    def record_fields(self, params):
        if params["page_cache"] != "limited":  # a record as before limited's keys existed
            params = {k: v for k, v in params.items() if k not in LIMITED_KEYS}
        return dict(
            params,
            decoder_version=DECODERS[params["decoder"]].version(),
            allocator_settings=allocator.settings(),  # what the trial's own process had
        )


def _limited_keys_set(params) -> bool:
    """True where cache_share or epochs is off its default (meaningful for limited only)."""
    return params.get("cache_share", "0.2") != "0.2" or params.get("epochs", "1") != "1"


def _limited_refusal(variant: str, params) -> str | None:
    """Why a page_cache limited cell cannot run (None: it can): docs/limited.md."""
    epochs = int(params["epochs"])
    if epochs < 2:
        return (
            "dataloader page_cache limited needs epochs of at least 2 (the first is cold; the "
            f"steady rate is the median of the later ones), got {epochs}"
        )
    if variant != "torch" or params["source"] != "jpeg" or params["storage"] != "local":
        return (
            "dataloader page_cache limited runs the torch pipeline on source jpeg from local "
            "storage (the epochs' order is its sampler's; the bytes the device served are "
            "its processes' /proc/<pid>/io): other pipelines, sources and storage not yet"
        )
    return None
