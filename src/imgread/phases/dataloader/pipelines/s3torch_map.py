"""The ``s3torch-map`` pipeline: Amazon's s3torchconnector as its users run it for training,
``S3MapDataset.from_objects([s3://<bucket>/<key>, ...], region=, endpoint=,
s3client_config=S3ClientConfig(unsigned=True, force_path_style=True), transform=)`` in a
``torch.utils.data.DataLoader(batch_size, num_workers=workers)``: the library's own remote
reader (the Mountpoint S3 client, AWS CRT), one S3Client per process (it makes its own in each
forked worker), each object read whole by its sequential S3Reader. The transform decodes the
bytes with PIL (``convert("RGB")``) and applies torchvision's Resize(256), CenterCrop(224),
ToTensor(), Normalize((0.5,)*3, (0.5,)*3); each sample is ``(image, label, key)``, the key the
manifest position of the object's key (``S3Reader.key``, carried by the library).

It reads an http profile only, through the storage client ``s3torchconnector`` (its grid key
``client`` takes that value only; storage local, which takes client imgread only, is left out):
the trial's session isolates the environment for that client (imgread.storage.clients.s3env:
unsigned, an explicit region, an IP-literal endpoint, no instance metadata, an empty HOME and
AWS config) before the DataLoader's workers fork, so they inherit it, and refuses a TLS
profile with one line (the CRT trusts the system's store). The endpoint, bucket and region are
the session's (its opener's ``endpoint``)."""

from __future__ import annotations

import io

from imgread.dataset.labels import labels as class_labels
from imgread.decoders import CROP, RESIZE_SHORTER
from imgread.errors import UserError
from imgread.phases.dataloader.pipelines.base import Pipeline
from imgread.phases.dataloader.pipelines.torchvision_io import ONE_VALUE, PeerLoader
from imgread.storage.clients.s3torch_client import S3TORCH

CLIENT = S3TORCH.name  # the storage client whose session (environment, TLS) it reads in
TRANSFORM = (
    f"Resize({RESIZE_SHORTER}), CenterCrop({CROP}), ToTensor(), Normalize((0.5,)*3, (0.5,)*3)"
)


class KeyedTransform:
    """S3MapDataset's transform: an S3Reader's bytes decoded by PIL and transformed, with the
    label and manifest position of the reader's key (picklable: a plain class and dicts)."""

    def __init__(self, positions: dict[str, int], labels: list[int]):
        from torchvision import transforms

        self.positions, self.labels = positions, labels
        self.transform = transforms.Compose(
            [
                transforms.Resize(RESIZE_SHORTER),
                transforms.CenterCrop(CROP),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __call__(self, reader):
        from PIL import Image

        key = self.positions[reader.key]
        with Image.open(io.BytesIO(reader.read())) as image:
            rgb = image.convert("RGB")
        return self.transform(rgb), self.labels[key], key


def endpoint_of(ctx):
    """The trial's storage endpoint (the session's opener's); UserError where the trial reads
    local files or through another client (the session isolates the environment per client)."""
    opener = ctx.opener
    endpoint = getattr(opener, "endpoint", None)
    if opener is None or opener.local_files or endpoint is None:
        raise UserError(
            "dataloader s3torch-map reads an object store through s3torchconnector's own "
            "reader: give it an http storage profile (storage: <profile of kind http>)"
        )
    client = ctx.params.get("client")
    if client != CLIENT:
        raise UserError(
            f"dataloader s3torch-map reads through s3torchconnector: use client {CLIENT} "
            f"(the trial's session isolates the environment for it), not {client!r}"
        )
    return endpoint


class S3MapRunner(PeerLoader):
    """``s3torch-map``: S3MapDataset.from_objects in a DataLoader (see the module's docstring)."""

    transform = TRANSFORM

    def samples(self, ctx):
        import PIL
        from s3torchconnector import S3MapDataset

        ep = endpoint_of(ctx)
        self.decoder = f"PIL.Image.open + convert('RGB') (Pillow {PIL.__version__})"
        n = len(ctx.jobs)
        keys = [ep.key(j.path) for j in ctx.jobs]
        # the storage client's own: unsigned, path style, the profile's retries + 1 attempts
        self.config = S3TORCH.config(ep)
        self.endpoint = ep
        dataset = S3MapDataset.from_objects(
            [f"s3://{ep.bucket}/{key}" for key in keys],
            region=ep.region,
            endpoint=ep.base_url,
            s3client_config=self.config,
            transform=KeyedTransform(
                {key: i for i, key in enumerate(keys)},
                [int(x) for x in class_labels(ctx.manifest)[:n]],
            ),
        )
        if len(dataset) != n:  # lists its objects here, before the workers fork
            raise RuntimeError(f"S3MapDataset lists {len(dataset)} objects, not the trial's {n}")
        return dataset

    def fields(self) -> dict:
        from importlib.metadata import version

        c = self.config
        return {
            **super().fields(),
            "s3torchconnector": version("s3torchconnector"),
            "s3torch_client_config": (
                f"S3ClientConfig(unsigned={c.unsigned}, force_path_style={c.force_path_style}, "
                f"max_attempts={c.max_attempts}, part_size={c.part_size}, "
                f"throughput_target_gbps={c.throughput_target_gbps})"
            ),
            "s3torch_reader": "S3ReaderConstructor.default() (sequential, the whole object)",
            "s3torch_endpoint": f"{self.endpoint.base_url} region {self.endpoint.region}",
        }


PIPELINE = Pipeline(
    "s3torch-map",
    "s3torchconnector's S3MapDataset.from_objects (its own CRT reader) + PIL and torchvision "
    "transforms in a DataLoader(num_workers=workers); 0 loads in the calling process",
    "imgread.phases.dataloader.pipelines.s3torch_map:S3MapRunner",
    imports=("torch", "torchvision", "PIL", "s3torchconnector"),
    distributions=("s3torchconnector", "s3torchconnectorclient", "torch", "torchvision", "pillow"),
    allowed={**ONE_VALUE, "client": (CLIENT,)},
    min_workers=0,
    reads="the trial's objects of an http profile, through s3torchconnector's own reader",
)
S3MapRunner.pipeline = PIPELINE
