"""Command line: ``imgread`` / ``python -m imgread`` (:mod:`imgread.cli.main`).

Each subcommand (or group) is a module here with ``add_parser(subparsers)``; its parsers set
``run``, the function that carries the command out.
"""
