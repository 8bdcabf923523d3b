"""What every subcommand's parser shares: the parser class, the argument types, the saturate
options, and how a resident fraction is printed."""

from __future__ import annotations

import argparse
import sys

from imgread.instruments import page_cache as cachectl


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same style, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"imgread: error: {message}\n")


def int_at_least(minimum: int):
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


positive = int_at_least(1)
non_negative = int_at_least(0)


def fraction(text: str) -> float:
    """An argparse type: a number between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_saturate_options(parser: argparse.ArgumentParser) -> None:
    """--saturate-bytes and --saturate-dir, for the commands that can use the saturate method."""
    parser.add_argument(
        "--saturate-bytes",
        type=positive,
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


def fraction_text(fraction: float | None) -> str:
    """A resident fraction as printed, or why it is unknown."""
    if fraction is None:
        return "unknown (mincore/fadvise unavailable on this platform)"
    return f"{fraction:.4f}"
