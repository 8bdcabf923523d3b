"""``imgread flush`` and ``imgread residency``: evict files from the page cache, and measure
how much of them it holds."""

from __future__ import annotations

import argparse

from imgread.cli.options import add_saturate_options, fraction_text
from imgread.instruments import page_cache as cachectl


def add_parser(subparsers) -> None:
    """The ``flush`` and ``residency`` commands."""
    fl = subparsers.add_parser(
        "flush",
        help="evict files from the page cache and print the resident fraction after",
        description="Evict files from the page cache. PATH is a file, a folder (recursive) or a "
        "manifest.csv (its images). Prints the fraction of their pages still resident.",
    )
    fl.set_defaults(run=run_flush)
    fl.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or manifest.csv")
    fl.add_argument(
        "--method",
        choices=[m for m in cachectl.METHODS if m != "none"],
        default="fadvise",
        help="fadvise: posix_fadvise(DONTNEED) per file (default); "
        "drop_caches: sync + /proc/sys/vm/drop_caches (root); saturate: write and read "
        "a large temporary file (the study's method)",
    )
    add_saturate_options(fl)

    rs = subparsers.add_parser(
        "residency",
        help="print the fraction of files' pages in the page cache",
        description="Print the fraction of the files' pages resident in the page cache "
        "(mincore). PATH is a file, a folder (recursive) or a manifest.csv.",
    )
    rs.set_defaults(run=run_residency)
    rs.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or manifest.csv")


def run_flush(args: argparse.Namespace) -> None:
    paths = cachectl.expand_paths(args.paths)
    fraction = cachectl.flush(
        paths, args.method, saturate_bytes=args.saturate_bytes, saturate_dir=args.saturate_dir
    )
    print(f"resident fraction after {args.method}: {fraction_text(fraction)} ({len(paths)} files)")


def run_residency(args: argparse.Namespace) -> None:
    paths = cachectl.expand_paths(args.paths)
    print(
        f"resident fraction: {fraction_text(cachectl.resident_fraction(paths))} "
        f"({len(paths)} files)"
    )
