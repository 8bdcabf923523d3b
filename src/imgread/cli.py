"""Command line: ``imgread`` / ``python -m imgread``.

User errors (a wrong path, option or value) print one line naming what is wrong and exit 2,
without a traceback; an interrupted command exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys

from imgread import cache as cachectl
from imgread import dataset
from imgread.decoders import DECODERS
from imgread.errors import TrialError, UserError, VerificationError
from imgread.phases.registry import PARAM_COLUMNS, PHASES
from imgread.util import exit_on_sigterm


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same style, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"imgread: error: {message}\n")


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a message saying which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _add_saturate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--saturate-bytes",
        type=_positive,
        default=cachectl.DEFAULT_SATURATE_BYTES,
        metavar="B",
        help="size of the saturate file (default %(default)s)",
    )
    parser.add_argument(
        "--saturate-dir",
        default=None,
        metavar="DIR",
        help="folder for the saturate file (default: the system temp folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(
        prog="imgread",
        description="Measure how fast images are read from disk and decoded in Python.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    ds = sub.add_parser(
        "dataset", help="create a dataset (generate synthetic JPEGs, or sample yours)"
    )
    ds_sub = ds.add_subparsers(
        dest="dataset_command", required=True, metavar="ACTION", parser_class=_Parser
    )

    gen = ds_sub.add_parser(
        "generate",
        help="generate a deterministic synthetic JPEG dataset",
        description="Generate photo-like JPEGs (1/f textures, edges, grain) with a manifest.csv. "
        "The folder must be new, empty, or a previous imgread dataset (which is replaced).",
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="folder to write the dataset to")
    gen.add_argument(
        "--count",
        type=_positive,
        default=dataset.DEFAULT_COUNT,
        metavar="N",
        help="number of images (default %(default)s)",
    )
    gen.add_argument(
        "--width",
        type=_positive,
        default=dataset.DEFAULT_WIDTH,
        metavar="W",
        help="image width in pixels (default %(default)s, a 12 MP phone photo)",
    )
    gen.add_argument(
        "--height",
        type=_positive,
        default=dataset.DEFAULT_HEIGHT,
        metavar="H",
        help="image height in pixels (default %(default)s)",
    )
    gen.add_argument(
        "--target-bytes",
        type=_positive,
        default=dataset.DEFAULT_TARGET_BYTES,
        metavar="B",
        help="mean file size to reach by choosing the JPEG quality, "
        "each file within +-10%% (default %(default)s)",
    )
    gen.add_argument(
        "--seed",
        type=_non_negative,
        default=dataset.DEFAULT_SEED,
        metavar="S",
        help="random seed: the same seed gives the same files (default %(default)s)",
    )
    gen.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="P",
        help="processes to use (default: all cores)",
    )

    smp = ds_sub.add_parser(
        "sample",
        help="copy a seeded sample of your own images into a dataset folder",
        description="Pick N images from SOURCE (recursive; .jpg/.jpeg, optionally .png) by seed, "
        "decode each once to check it, and copy it into OUT. SOURCE is only ever read.",
    )
    smp.add_argument("--source", required=True, metavar="DIR", help="your image folder (read only)")
    smp.add_argument("--out", required=True, metavar="DIR", help="folder to copy the sample to")
    smp.add_argument("--count", type=_positive, required=True, metavar="N", help="images to take")
    smp.add_argument(
        "--seed",
        type=_non_negative,
        default=dataset.DEFAULT_SEED,
        metavar="S",
        help="random seed for the choice and order (default %(default)s)",
    )
    smp.add_argument("--include-png", action="store_true", help="also take .png files")
    smp.add_argument(
        "--on-invalid",
        choices=("skip", "fail"),
        default="skip",
        help="what an unreadable file does: skip it (listed in skipped.csv) or "
        "fail the command (default %(default)s)",
    )

    fl = sub.add_parser(
        "flush",
        help="evict files from the page cache and print the resident fraction after",
        description="Evict files from the page cache. PATH is a file, a folder (recursive) or a "
        "manifest.csv (its images). Prints the fraction of their pages still resident.",
    )
    fl.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or manifest.csv")
    fl.add_argument(
        "--method",
        choices=[m for m in cachectl.METHODS if m != "none"],
        default="fadvise",
        help="fadvise: posix_fadvise(DONTNEED) per file (default); "
        "drop_caches: sync + /proc/sys/vm/drop_caches (root); saturate: write and read "
        "a large temporary file (the study's method)",
    )
    _add_saturate_options(fl)

    rs = sub.add_parser(
        "residency",
        help="print the fraction of files' pages in the page cache",
        description="Print the fraction of the files' pages resident in the page cache "
        "(mincore). PATH is a file, a folder (recursive) or a manifest.csv.",
    )
    rs.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or manifest.csv")

    cache_cmd = sub.add_parser("cache", help="build a decoded cache for the DataLoader phase")
    cache_sub = cache_cmd.add_subparsers(
        dest="cache_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    cb = cache_sub.add_parser(
        "build",
        help="decode a dataset once into a .npy of 224 crops and the seed's pickle of tensors",
        description="Decode the first N images of a manifest (all by default) with DECODER to "
        "the 224 crop and write images_u8.npy (uint8 N x 3 x 224 x 224), tensors.pkl (the "
        "seed's pickle of normalised tensors), labels.npy and cache.json into OUT.",
    )
    cb.add_argument("--manifest", required=True, metavar="FILE", help="the dataset's manifest.csv")
    cb.add_argument("--decoder", required=True, choices=list(DECODERS), help="the decoder")
    cb.add_argument("--out", required=True, metavar="DIR", help="folder to write the cache to")
    cb.add_argument("--n", type=_positive, default=None, metavar="N", help="images (default all)")

    sub.add_parser(
        "decoders",
        help="list the decoders with their library versions",
        description="List the decoder registry: name, library version, what it does.",
    )

    names = sorted({name for ph in PHASES.values() for name in ph.variants})
    tr = sub.add_parser(
        "trial",
        help="run one timed trial and write its record as JSON",
        description="Run one trial: prepare the cache (cold for load, warm for decode), verify "
        "it, time exactly the work, check it against the manifest, write one JSON record. "
        "Variants: "
        + "; ".join(
            f"{ph.name}/{n}: {v.description}"
            for ph in PHASES.values()
            for n, v in ph.variants.items()
        ),
    )
    tr.add_argument("--manifest", required=True, metavar="FILE", help="the dataset's manifest.csv")
    tr.add_argument(
        "--phase",
        required=True,
        choices=list(PHASES),
        help="; ".join(f"{ph.name}: {ph.description}" for ph in PHASES.values()),
    )
    tr.add_argument("--variant", required=True, choices=names, help="reader variant (see above)")
    tr.add_argument(
        "--n",
        type=_positive,
        required=True,
        metavar="N",
        help="number of images: the manifest's first N",
    )
    tr.add_argument(
        "--workers",
        type=_non_negative,
        default=1,
        metavar="W",
        help="threads or processes of a parallel variant; DataLoader num_workers, where 0 "
        "loads in the calling process (default 1)",
    )
    tr.add_argument(
        "--repetition",
        type=_non_negative,
        default=0,
        metavar="R",
        help="repetition index, recorded (default 0)",
    )
    tr.add_argument(
        "--cache-method",
        choices=cachectl.METHODS,
        default=cachectl.DEFAULT_METHOD,
        help="how the load phase makes the cache cold (default %(default)s)",
    )
    tr.add_argument(
        "--max-resident-fraction",
        type=_fraction,
        default=cachectl.DEFAULT_MAX_RESIDENT_FRACTION,
        metavar="F",
        help="fail a cold trial if more than this is resident (default %(default)s)",
    )
    _add_saturate_options(tr)
    for name in PARAM_COLUMNS:  # every phase's grid keys, from the phase registry
        owners = [ph for ph in PHASES.values() for p in ph.params if p.name == name]
        param = next(p for p in owners[0].params if p.name == name)
        tr.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            choices=param.choices,
            default=None,
            metavar=None if param.choices else "N",
            help=f"{'/'.join(ph.name for ph in owners)}: {param.description} "
            f"(default {param.default})",
        )
    tr.add_argument(
        "--reference",
        default=None,
        metavar="FILE.csv",
        help="decode with delivery pixels, dataloader: checksums to check the pixels against "
        "(default: decode sequentially after the clock stops)",
    )
    tr.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="dataloader with source cache-npy or cache-pickle: the decoded cache to read "
        "(made by 'imgread cache build')",
    )
    tr.add_argument("--out", required=True, metavar="FILE.json", help="where to write the record")
    return parser


def _fraction_text(fraction: float | None) -> str:
    if fraction is None:
        return "unknown (mincore/fadvise unavailable on this platform)"
    return f"{fraction:.4f}"


def _cmd(args) -> int:
    if args.command == "dataset" and args.dataset_command == "generate":
        params = dataset.GenerateParams(
            count=args.count,
            width=args.width,
            height=args.height,
            target_bytes=args.target_bytes,
            seed=args.seed,
        )
        manifest = dataset.generate(args.out, params, workers=args.workers)
        print(manifest)
    elif args.command == "dataset":
        manifest = dataset.sample(
            args.source,
            args.out,
            args.count,
            seed=args.seed,
            include_png=args.include_png,
            on_invalid=args.on_invalid,
        )
        print(manifest)
    elif args.command == "flush":
        paths = cachectl.expand_paths(args.paths)
        fraction = cachectl.flush(
            paths, args.method, saturate_bytes=args.saturate_bytes, saturate_dir=args.saturate_dir
        )
        print(
            f"resident fraction after {args.method}: {_fraction_text(fraction)} "
            f"({len(paths)} files)"
        )
    elif args.command == "residency":
        paths = cachectl.expand_paths(args.paths)
        print(
            f"resident fraction: {_fraction_text(cachectl.resident_fraction(paths))} "
            f"({len(paths)} files)"
        )
    elif args.command == "cache":
        from imgread.decoded_cache import build

        info = build(args.manifest, args.decoder, args.out, n=args.n)
        print(
            f"{args.out}: {info['images']} images by {info['decoder']}, npy "
            f"{info['npy_bytes'] / 1e6:.1f} MB in {info['npy_build_seconds']:.1f} s, pickle "
            f"{info['pickle_bytes'] / 1e6:.1f} MB in {info['pickle_build_seconds']:.1f} s"
        )
    elif args.command == "decoders":
        from imgread.decoders import versions

        for name, d in DECODERS.items():
            jpeg = " (JPEG only)" if d.jpeg_only else ""
            print(f"{name:<13} {versions()[name]}{jpeg}\n{'':<13} {d.description}")
    elif args.command == "trial":
        from imgread.trial import TrialSpec, run_trial, write_record

        given = {k: getattr(args, k) for k in PARAM_COLUMNS if getattr(args, k) is not None}
        own = {p.name for p in PHASES[args.phase].params}
        if set(given) - own:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(set(given) - own))
            raise UserError(f"{flags} do not apply to --phase {args.phase}")
        spec = TrialSpec(
            manifest=args.manifest,
            phase=args.phase,
            variant=args.variant,
            n_images=args.n,
            workers=args.workers,
            repetition=args.repetition,
            cache_method=args.cache_method,
            max_resident_fraction=args.max_resident_fraction,
            saturate_bytes=args.saturate_bytes,
            saturate_dir=args.saturate_dir,
            params=given,
            reference=args.reference,
            cache_dir=args.cache_dir,
        )
        record = run_trial(spec)
        write_record(record, args.out)
        print(
            f"{spec.describe()}: {record.seconds:.4f} s (+{record.startup_seconds:.4f} s "
            f"start-up), resident before {_fraction_text(record.resident_fraction_before)}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    exit_on_sigterm()
    try:
        return _cmd(args)
    except UserError as exc:
        print(f"imgread: error: {exc}", file=sys.stderr)
        return 2
    except (TrialError, VerificationError) as exc:
        print(f"imgread: trial failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imgread: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
