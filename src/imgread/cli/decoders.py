"""``imgread decoders``: list the decoder registry: versions, formats, what each does."""

from __future__ import annotations

import argparse

from imgread.decoders import DECODERS, FORMATS, versions


def add_parser(subparsers) -> None:
    """The ``decoders`` command."""
    subparsers.add_parser(
        "decoders",
        help="list the decoders with their library versions and formats",
        description="List the decoder registry: name, library version, the formats it decodes "
        "here (jpeg, png, webp, avif), what it does; a decoder whose library is not installed "
        "says so and what to install.",
    ).set_defaults(run=run)


def _pillow_avif() -> str:
    """One line: whether this Pillow decodes AVIF."""
    import PIL
    from PIL import features

    if "avif" in DECODERS["pillow"].formats:
        try:
            lib = features.version("avif")
        except ValueError:  # AVIF from a plugin, not a Pillow feature
            lib = None
        return f"AVIF: this Pillow ({PIL.__version__}) decodes it" + (
            f" (libavif {lib})" if lib else ""
        )
    return (
        f"AVIF: this Pillow ({PIL.__version__}) does not decode it (Pillow >= 11.2 built with "
        "AVIF, as its wheels are, or pillow-avif-plugin); pillow and pillow-draft skip AVIF"
    )


def run(args: argparse.Namespace) -> None:
    pad = " " * 13
    for name, d in DECODERS.items():
        why = d.missing()
        if why is not None:
            print(f"{name:<13} {why}")
        else:
            print(f"{name:<13} {versions()[name]}")
        print(f"{pad} formats: {', '.join(f for f in FORMATS if f in d.formats)}")
        print(f"{pad} {d.description}")
    print(_pillow_avif())
