"""``imgread dataset generate``, ``imgread dataset sample`` and ``imgread dataset shards``."""

from __future__ import annotations

import argparse

from imgread import dataset
from imgread.cli.options import Parser, non_negative, positive


def add_parser(subparsers) -> None:
    """The ``dataset`` command and its actions."""
    ds = subparsers.add_parser(
        "dataset", help="create a dataset (generate synthetic JPEGs, or sample yours)"
    )
    actions = ds.add_subparsers(
        dest="dataset_command", required=True, metavar="ACTION", parser_class=Parser
    )
    _add_generate(actions)
    _add_sample(actions)
    _add_shards(actions)


def _add_shards(actions) -> None:
    sh = actions.add_parser(
        "shards",
        help="pack a dataset into tar shards (WebDataset: key.jpg + key.cls)",
        description="Pack the images of MANIFEST, in its order, into tar shards of at most MB "
        "megabytes each, in <dataset>/shards/<MB>mb/ with their own index (shards.csv, "
        "sha256 per shard). The dataset's own files are only read.",
    )
    sh.set_defaults(run=run_shards)
    sh.add_argument("--manifest", required=True, metavar="FILE", help="the dataset's manifest.csv")
    sh.add_argument("--mb", type=positive, required=True, metavar="MB", help="shard size in MB")


def _add_generate(actions) -> None:
    gen = actions.add_parser(
        "generate",
        help="generate a deterministic synthetic JPEG dataset",
        description="Generate photo-like JPEGs (1/f textures, edges, grain) with a manifest.csv. "
        "The folder must be new, empty, or a previous imgread dataset (which is replaced).",
    )
    gen.set_defaults(run=run_generate)
    gen.add_argument("--out", required=True, metavar="DIR", help="folder to write the dataset to")
    gen.add_argument(
        "--count",
        type=positive,
        default=dataset.DEFAULT_COUNT,
        metavar="N",
        help="number of images (default %(default)s)",
    )
    gen.add_argument(
        "--width",
        type=positive,
        default=dataset.DEFAULT_WIDTH,
        metavar="W",
        help="image width in pixels (default %(default)s, a 12 MP phone photo)",
    )
    gen.add_argument(
        "--height",
        type=positive,
        default=dataset.DEFAULT_HEIGHT,
        metavar="H",
        help="image height in pixels (default %(default)s)",
    )
    gen.add_argument(
        "--target-bytes",
        type=positive,
        default=dataset.DEFAULT_TARGET_BYTES,
        metavar="B",
        help="mean file size to reach by choosing the JPEG quality, "
        "each file within +-10%% (default %(default)s)",
    )
    gen.add_argument(
        "--seed",
        type=non_negative,
        default=dataset.DEFAULT_SEED,
        metavar="S",
        help="random seed: the same seed gives the same files (default %(default)s)",
    )
    gen.add_argument(
        "--size-spread",
        type=float,
        default=0.0,
        metavar="F",
        help="draw each image's sides within +-F of width and height (default 0: all alike)",
    )
    gen.add_argument(
        "--format",
        choices=("jpeg", "png", "webp", "avif"),
        default="jpeg",
        help="encoding (default %(default)s; avif where Pillow writes it)",
    )
    gen.add_argument(
        "--quality",
        type=positive,
        default=None,
        metavar="Q",
        help="a fixed quality (jpeg, webp, avif) instead of the one reaching --target-bytes",
    )
    gen.add_argument(
        "--subsampling",
        choices=("4:2:0", "4:2:2", "4:4:4"),
        default="4:2:0",
        help="JPEG chroma subsampling (default %(default)s)",
    )
    gen.add_argument("--progressive", action="store_true", help="progressive JPEG")
    gen.add_argument(
        "--workers",
        type=positive,
        default=None,
        metavar="P",
        help="processes to use (default: all cores)",
    )


def _add_sample(actions) -> None:
    smp = actions.add_parser(
        "sample",
        help="copy a seeded sample of your own images into a dataset folder",
        description="Pick N images from SOURCE (recursive; .jpg/.jpeg, optionally .png) by seed, "
        "decode each once to check it, and copy it into OUT. SOURCE is only ever read.",
    )
    smp.set_defaults(run=run_sample)
    smp.add_argument("--source", required=True, metavar="DIR", help="your image folder (read only)")
    smp.add_argument("--out", required=True, metavar="DIR", help="folder to copy the sample to")
    smp.add_argument("--count", type=positive, required=True, metavar="N", help="images to take")
    smp.add_argument(
        "--seed",
        type=non_negative,
        default=dataset.DEFAULT_SEED,
        metavar="S",
        help="random seed for the choice and order (default %(default)s)",
    )
    smp.add_argument("--include-png", action="store_true", help="also take .png files")
    smp.add_argument(
        "--on-invalid",
        choices=("skip", "keep", "fail"),
        default="skip",
        help="what a file that cannot be read or that some decoder refuses does: skip it "
        "(listed in skipped.csv), keep it where Pillow reads it (refused.csv; the refusing "
        "decoders' cells are left out), or fail the command (default %(default)s)",
    )


def run_generate(args: argparse.Namespace) -> None:
    params = dataset.GenerateParams(
        count=args.count,
        width=args.width,
        height=args.height,
        target_bytes=args.target_bytes,
        seed=args.seed,
        size_spread=args.size_spread,
        format=args.format,
        quality=args.quality,
        subsampling=args.subsampling,
        progressive=args.progressive,
    )
    print(dataset.generate(args.out, params, workers=args.workers))


def run_shards(args: argparse.Namespace) -> None:
    from imgread.dataset.shards import pack

    print(pack(args.manifest, args.mb))


def run_sample(args: argparse.Namespace) -> None:
    manifest = dataset.sample(
        args.source,
        args.out,
        args.count,
        seed=args.seed,
        include_png=args.include_png,
        on_invalid=args.on_invalid,
    )
    print(manifest)
