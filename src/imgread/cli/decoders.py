"""``imgread decoders``: list the decoder registry with the library versions."""

from __future__ import annotations

import argparse

from imgread.decoders import DECODERS, versions


def add_parser(subparsers) -> None:
    """The ``decoders`` command."""
    subparsers.add_parser(
        "decoders",
        help="list the decoders with their library versions",
        description="List the decoder registry: name, library version, what it does.",
    ).set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    for name, d in DECODERS.items():
        jpeg = " (JPEG only)" if d.jpeg_only else ""
        print(f"{name:<13} {versions()[name]}{jpeg}\n{'':<13} {d.description}")
