import argparse
import csv
import json
import subprocess
import sys

import pytest

from imgread.cli.main import build_parser


def imgread(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "imgread", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_generate_flush_residency_trial_round_trip(tmp_path):
    out = tmp_path / "ds"
    r = imgread(
        "dataset",
        "generate",
        "--out",
        out,
        "--count",
        4,
        "--width",
        96,
        "--height",
        64,
        "--target-bytes",
        8000,
        "--seed",
        2,
    )
    assert r.stdout.strip() == str(out / "manifest.csv")
    assert "generate" in r.stderr  # progress shown
    r = imgread("residency", out / "manifest.csv")
    assert r.stdout.startswith("resident fraction: ")
    r = imgread("flush", out, "--method", "fadvise")
    assert "resident fraction after fadvise: 0.0000" in r.stdout
    r = imgread(
        "trial",
        "--manifest",
        out / "manifest.csv",
        "--phase",
        "decode",
        "--variant",
        "processes",
        "--n",
        3,
        "--workers",
        2,
        "--repetition",
        1,
        "--out",
        tmp_path / "t.json",
    )
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["variant"] == "processes" and rec["n_images"] == 3 and rec["pixels"] == 3 * 96 * 64


def test_sample_round_trip(tmp_path):
    imgread(
        "dataset",
        "generate",
        "--out",
        tmp_path / "src",
        "--count",
        5,
        "--width",
        64,
        "--height",
        48,
        "--target-bytes",
        5000,
    )
    r = imgread(
        "dataset",
        "sample",
        "--source",
        tmp_path / "src",
        "--out",
        tmp_path / "s",
        "--count",
        3,
        "--seed",
        1,
    )
    assert (tmp_path / "s" / "manifest.csv").is_file() and "manifest.csv" in r.stdout
    # the round trip: 3 of the 5 images, byte for byte, each listed with its source file
    from imgread.dataset.manifest import read_manifest

    m = read_manifest(tmp_path / "s" / "manifest.csv")
    assert len(m) == 3
    with open(tmp_path / "s" / "sources.csv", newline="", encoding="utf-8") as fh:
        sources = {row["path"]: row["source"] for row in csv.DictReader(fh)}
    assert sorted(sources) == sorted(e.path for e in m.entries)
    for e in m.entries:
        copied = (m.root / e.path).read_bytes()
        assert copied == (tmp_path / "src" / sources[e.path]).read_bytes()
        assert len(copied) == e.bytes and (e.width, e.height) == (64, 48)
    # the same seed picks the same images in the same order
    imgread(
        "dataset",
        "sample",
        "--source",
        tmp_path / "src",
        "--out",
        tmp_path / "s2",
        "--count",
        3,
        "--seed",
        1,
    )
    again = read_manifest(tmp_path / "s2" / "manifest.csv")
    assert [e.sha256 for e in again.entries] == [e.sha256 for e in m.entries]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            [
                "trial",
                "--manifest",
                "nope.csv",
                "--phase",
                "load",
                "--variant",
                "sequential",
                "--n",
                "2",
                "--out",
                "x.json",
            ],
            "manifest not found: nope.csv",
        ),
        (
            [
                "trial",
                "--manifest",
                "m.csv",
                "--phase",
                "fry",
                "--variant",
                "sequential",
                "--n",
                "2",
                "--out",
                "x.json",
            ],
            "argument --phase: invalid choice: 'fry'",
        ),
        (["dataset", "generate", "--out", "x", "--count", "0"], "--count: must be at least 1"),
        (["dataset", "generate", "--out", "x", "--count", "ten"], "expected a whole number"),
        (["flush", "/definitely/not/here"], "no such file or folder: /definitely/not/here"),
        (
            ["dataset", "sample", "--source", "/definitely/not", "--out", "y", "--count", "2"],
            "--source /definitely/not is not a folder",
        ),
        (["residency"], "the following arguments are required: PATH"),
    ],
)
def test_wrong_input_gives_a_clear_message_and_no_traceback(tmp_path, args, message):
    r = subprocess.run(
        [sys.executable, "-m", "imgread", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def _commands(parser, prefix=()) -> list[tuple[str, ...]]:
    """Every command path of the parser tree: (), ("dataset",), ("dataset", "generate"), ..."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_command_tree_is_found_from_the_parser():
    # the help test below covers every command the parser has, not a list kept by hand
    assert {("dataset", "sample"), ("cache", "build"), ("decoders",), ("trial",)} <= set(COMMANDS)
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("sub", COMMANDS, ids=lambda sub: " ".join(sub) or "imgread")
def test_every_command_has_help(sub):
    r = imgread(*sub, "--help")
    assert r.stdout.startswith(f"usage: imgread{''.join(' ' + s for s in sub)}"), r.stdout[:200]
    assert "usage: imgread" in r.stdout and "-h, --help" in r.stdout
