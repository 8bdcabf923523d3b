"""The ``torchvision-io`` pipeline: a ``torch.utils.data.DataLoader`` over a Dataset that reads
each file's bytes, decodes them with ``torchvision.io.decode_jpeg`` (libjpeg-turbo, to a uint8
3 x H x W tensor) and transforms the tensor with ``torchvision.transforms.v2`` (Resize(256,
antialias=True), CenterCrop(224), ToDtype(float32, scale=True), Normalize): torchvision's own
tensor path, no PIL image anywhere. Each sample is ``(image, label, key)``, the key its manifest
position, collated by the library beside it.

:class:`PeerLoader` is the shape both torchvision pipelines share: the project's
:class:`~imgread.phases.dataloader.pipelines.torch_loader.LoaderRunner` (its DataLoader with
persistent workers, warm-up epoch, timed epoch, worker-death detection and close) over the
peer's own Dataset instead of the project's."""

from __future__ import annotations

import warnings

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP, RESIZE_SHORTER
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.torch_loader import LoaderRunner

# The keys a torchvision pipeline does not take: the project's own decoders, sources and
# loader tunings (pillow is the reference its pixels are checked against).
ONE_VALUE = {
    "decoder": ("pillow",),
    "source": ("jpeg",),
    "normalize": ("item",),
    "collate": ("fresh",),
    "allocator": ("default",),
}
MEAN = STD = (0.5, 0.5, 0.5)  # the seed's Normalize: (x / 255 - 0.5) / 0.5
TRANSFORM = (
    f"v2.Resize({RESIZE_SHORTER}, antialias=True), v2.CenterCrop({CROP}), "
    "v2.ToDtype(float32, scale=True), v2.Normalize((0.5,)*3, (0.5,)*3)"
)


class PeerLoader(LoaderRunner):
    """LoaderRunner over the Dataset of a subclass's :meth:`samples` (``(image, label, key)``
    items); its record adds torchvision's version, the decoder and transform, the threads."""

    pipeline: Pipeline
    decoder = ""
    transform = ""

    def _samples(self, ctx):
        return None, self.samples(ctx)

    def samples(self, ctx):
        """The map-style Dataset the DataLoader reads: ``(image, label, key)`` per index."""
        raise NotImplementedError

    def fields(self) -> dict:
        import torch
        import torchvision

        out = super().fields()
        out.pop("cache_load_seconds", None)  # the project's cache-pickle source only
        return {
            **out,
            "torchvision": torchvision.__version__,
            "pipeline_versions": self.pipeline.versions(),
            "pipeline_decoder": self.decoder,
            "pipeline_transform": self.transform,
            # the trial's process (set to 1 before the clock, as in every worker)
            "torch_threads": torch.get_num_threads(),
        }


class DecodeJpegSamples:
    """``(image, label, key)`` of the trial's files: the bytes read (a local file opened where it
    is, else ``opener.read``), ``decode_jpeg`` to RGB, the v2 transform on the uint8 tensor."""

    def __init__(self, paths, labels, opener=None):
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms import v2

        self.paths, self.labels = list(paths), [int(x) for x in labels]
        self.opener = opener if opener is not None and not opener.local_files else None
        self.decode, self.mode = decode_jpeg, ImageReadMode.RGB
        self.frombuffer, self.uint8 = torch.frombuffer, torch.uint8
        self.transform = v2.Compose(
            [
                v2.Resize(RESIZE_SHORTER, antialias=True),
                v2.CenterCrop(CROP),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN, STD),
            ]
        )
        # decode_jpeg only reads its input: wrapping the read-only bytes is safe, and copying
        # them to silence PyTorch's warning would add a copy a user need not make. Set here,
        # before the workers fork, so that they have it too.
        warnings.filterwarnings("ignore", message="The given buffer is not writable")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.paths[i]
        if self.opener is None:
            with open(path, "rb") as fh:
                data = fh.read()
        else:
            data = self.opener.read(path)
        image = self.decode(self.frombuffer(data, dtype=self.uint8), mode=self.mode)
        return self.transform(image), self.labels[i], i


class IoRunner(PeerLoader):
    """``torchvision-io``: decode_jpeg and v2 transforms in a DataLoader's workers."""

    decoder = "torchvision.io.decode_jpeg (libjpeg-turbo), mode RGB"
    transform = TRANSFORM

    def samples(self, ctx):
        n = len(ctx.jobs)
        return DecodeJpegSamples(
            [j.path for j in ctx.jobs], class_labels(ctx.manifest)[:n], ctx.opener
        )


PIPELINE = Pipeline(
    "torchvision-io",
    "torchvision.io.decode_jpeg + transforms.v2 on uint8 tensors in a "
    "DataLoader(num_workers=workers); 0 loads in the calling process",
    "imgread.phases.dataloader.pipelines.torchvision_io:IoRunner",
    imports=("torch", "torchvision"),
    distributions=("torch", "torchvision"),
    allowed=ONE_VALUE,
    min_workers=0,
    reads="the trial's files: opened where they are locally, else through the opener",
)
IoRunner.pipeline = PIPELINE


def fuzz_decode(path: str, output: str = "full"):
    """What this pipeline's workers do to one file, for the fuzz run (imgread.decoders.fuzz):
    ``decode_jpeg`` of its bytes to RGB, as H x W x 3 uint8 (``output`` is not used)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    with open(path, "rb") as fh:
        data = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
    return decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
