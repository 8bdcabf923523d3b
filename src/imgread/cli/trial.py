"""``imgread trial``: run one timed trial and write its record as JSON.

The phases, their variants and their grid keys come from the phase registry; the spec is
built by :func:`imgread.trial.run.build_spec`, as the workflow's trial rule builds it.
"""

from __future__ import annotations

import argparse

import yaml

from imgread.cli.options import (
    add_saturate_options,
    fraction,
    fraction_text,
    non_negative,
    positive,
)
from imgread.errors import UserError
from imgread.instruments import page_cache as cachectl
from imgread.phases.base import NameParam
from imgread.phases.registry import PARAM_COLUMNS, PHASES, get_phase
from imgread.storage import registry as storage
from imgread.trial.run import build_spec, run_trial, write_record


def add_parser(subparsers) -> None:
    """The ``trial`` command: the cell, the cache settings, the phases' keys and inputs."""
    tr = subparsers.add_parser(
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
    tr.set_defaults(run=run)
    _add_cell_options(tr)
    _add_cache_options(tr)
    _add_param_options(tr)
    _add_input_options(tr)
    tr.add_argument("--out", required=True, metavar="FILE.json", help="where to write the record")


def _add_cell_options(tr: argparse.ArgumentParser) -> None:
    names = sorted({name for ph in PHASES.values() for name in ph.variants})
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
        type=positive,
        required=True,
        metavar="N",
        help="number of images: the manifest's first N",
    )
    tr.add_argument(
        "--workers",
        type=non_negative,
        default=1,
        metavar="W",
        help="threads or processes of a parallel variant; DataLoader num_workers, where 0 "
        "loads in the calling process (default 1)",
    )
    tr.add_argument(
        "--repetition",
        type=non_negative,
        default=0,
        metavar="R",
        help="repetition index, recorded (default 0)",
    )


def _add_cache_options(tr: argparse.ArgumentParser) -> None:
    tr.add_argument(
        "--cache-method",
        choices=cachectl.METHODS,
        default=cachectl.DEFAULT_METHOD,
        help="how the load phase makes the cache cold (default %(default)s)",
    )
    tr.add_argument(
        "--max-resident-fraction",
        type=fraction,
        default=cachectl.DEFAULT_MAX_RESIDENT_FRACTION,
        metavar="F",
        help="fail a cold trial if more than this is resident (default %(default)s)",
    )
    add_saturate_options(tr)


def _add_param_options(tr: argparse.ArgumentParser) -> None:
    for name in PARAM_COLUMNS:  # every phase's grid keys, from the phase registry
        owners = [ph for ph in PHASES.values() for p in ph.params if p.name == name]
        param = next(p for p in owners[0].params if p.name == name)
        tr.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            choices=param.choices,
            default=None,
            metavar=None if param.choices else ("NAME" if isinstance(param, NameParam) else "N"),
            help=f"{'/'.join(ph.name for ph in owners)}: {param.description} "
            f"(default {param.default})",
        )


def _add_input_options(tr: argparse.ArgumentParser) -> None:
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
    tr.add_argument(
        "--storage-config",
        default="config/config.yaml",
        metavar="FILE.yaml",
        help="a study config whose storage: list defines the --storage profile "
        "(default %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    given = {k: getattr(args, k) for k in PARAM_COLUMNS if getattr(args, k) is not None}
    own = {p.name for p in get_phase(args.phase).params}
    if set(given) - own:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(set(given) - own))
        raise UserError(f"{flags} do not apply to --phase {args.phase}")
    profile = None
    if given.get("storage", storage.DEFAULT) != storage.DEFAULT:
        profile = _profile(args.storage_config, given["storage"])
    spec = build_spec(
        args.manifest,
        args.phase,
        args.variant,
        args.n,
        args.workers,
        args.repetition,
        given,
        inputs={"reference": args.reference, "cache_dir": args.cache_dir},
        cache={
            "cache_method": args.cache_method,
            "max_resident_fraction": args.max_resident_fraction,
            "saturate_bytes": args.saturate_bytes,
            "saturate_dir": args.saturate_dir,
        },
        storage=profile,
    )
    record = run_trial(spec)
    write_record(record, args.out)
    print(
        f"{spec.describe()}: {record.seconds:.4f} s (+{record.startup_seconds:.4f} s "
        f"start-up), resident before {fraction_text(record.resident_fraction_before)}"
    )


def _profile(config_file: str, name: str) -> dict:
    """The storage profile ``name`` of the config file's storage: list, as a spec carries it."""
    try:
        with open(config_file, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise UserError(f"--storage-config {config_file}: {exc.strerror}") from None
    profiles = storage.parse_profiles(config.get("storage"))
    if name not in profiles:
        raise UserError(
            f"--storage {name}: no such profile in {config_file} (it has {sorted(profiles)})"
        )
    return profiles[name].as_dict()
