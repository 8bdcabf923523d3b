"""``imgread cache build``: decode a dataset once into the DataLoader phase's decoded cache."""

from __future__ import annotations

import argparse

from imgread.cli.options import Parser, positive
from imgread.decoders import DECODERS
from imgread.phases.dataloader.decoded_cache import build


def add_parser(subparsers) -> None:
    """The ``cache`` command and its ``build`` action."""
    cache_cmd = subparsers.add_parser(
        "cache", help="build a decoded cache for the DataLoader phase"
    )
    actions = cache_cmd.add_subparsers(
        dest="cache_command", required=True, metavar="ACTION", parser_class=Parser
    )
    cb = actions.add_parser(
        "build",
        help="decode a dataset once into a .npy of 224 crops and the seed's pickle of tensors",
        description="Decode the first N images of a manifest (all by default) with DECODER to "
        "the 224 crop and write images_u8.npy (uint8 N x 3 x 224 x 224), tensors.pkl (the "
        "seed's pickle of normalised tensors), labels.npy and cache.json into OUT.",
    )
    cb.set_defaults(run=run)
    cb.add_argument("--manifest", required=True, metavar="FILE", help="the dataset's manifest.csv")
    cb.add_argument("--decoder", required=True, choices=list(DECODERS), help="the decoder")
    cb.add_argument("--out", required=True, metavar="DIR", help="folder to write the cache to")
    cb.add_argument("--n", type=positive, default=None, metavar="N", help="images (default all)")


def run(args: argparse.Namespace) -> None:
    info = build(args.manifest, args.decoder, args.out, n=args.n)
    print(
        f"{args.out}: {info['images']} images by {info['decoder']}, npy "
        f"{info['npy_bytes'] / 1e6:.1f} MB in {info['npy_build_seconds']:.1f} s, pickle "
        f"{info['pickle_bytes'] / 1e6:.1f} MB in {info['pickle_build_seconds']:.1f} s"
    )
