"""Command line: ``imgread`` / ``python -m imgread``.

User errors (a wrong path, option or value) print one line naming what is wrong and exit 2,
without a traceback; an interrupted command exits 130 (SIGINT) or 143 (SIGTERM).

Each subcommand (or group) is a module here with ``add_parser(subparsers)``; its parsers set
``run``, the function that carries the command out.
"""

from __future__ import annotations

import argparse
import signal
import sys

from imgread.cli import dataset, decoded_cache, decoders, page_cache, trial
from imgread.cli.options import Parser
from imgread.errors import TrialError, UserError, VerificationError
from imgread.util import exit_on_sigterm

COMMANDS = (dataset, page_cache, decoded_cache, decoders, trial)  # in the order --help lists


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = Parser(
        prog="imgread",
        description="Measure how fast images are read from disk and decoded in Python.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    exit_on_sigterm()
    try:
        args.run(args)
        return 0
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
