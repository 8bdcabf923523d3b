import json
import subprocess
import sys

import pytest


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


@pytest.mark.parametrize(
    "sub", [[], ["dataset", "generate"], ["dataset", "sample"], ["flush"], ["residency"], ["trial"]]
)
def test_every_command_has_help(sub):
    r = imgread(*sub, "--help")
    assert "usage: imgread" in r.stdout and "-h, --help" in r.stdout
