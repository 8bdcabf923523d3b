"""Delivered pixels: complete, checksummed, refused when they cannot fit, and shared memory
released on every exit path (success, a bad image, a killed worker, Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from imgread.dataset import GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.decoders.reference import write_reference
from imgread.errors import TrialError, UserError, VerificationError
from imgread.phases.decode import phase as decode_phase
from imgread.trial.run import TrialSpec, run_trial

from ...support.deaths import (
    assert_failed_cleanly,
    kill_worker,
    shm_entries,
)
from ...support.helpers import (
    HAVE_PROC,
    SHM,
    corrupt_keeping_size_and_mtime,
    left_alive,
    run_trial_cli,
    segments,
    start_trial,
    wait_for_workers,
)

pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs Linux /dev/shm")


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory):
    """150 images that take a few seconds to decode: time to interrupt a trial."""
    return generate(
        tmp_path_factory.mktemp("long") / "ds",
        GenerateParams(count=150, width=1600, height=1200, target_bytes=400_000),
        progress=False,
    )


@pytest.mark.parametrize(
    "variant,workers,decoder,output",
    [
        ("sequential", 1, "pillow", "full"),
        ("threads", 2, "opencv", "full"),
        ("processes", 2, "simplejpeg", "crop224"),
        ("processes-shm", 2, "pillow-draft", "crop224"),
        ("processes-shm", 3, "opencv", "full"),
    ],
)
def test_pixels_reach_the_caller_complete_and_checksummed(
    small_dataset, variant, workers, decoder, output
):
    before = segments()
    params = {"decoder": decoder, "output": output, "delivery": "pixels"}
    rec = run_trial(TrialSpec(str(small_dataset), "decode", variant, 8, workers, params=params))
    d = rec.to_dict()
    m = read_manifest(small_dataset)
    per_image = 224 * 224 if output == "crop224" else m.entries[0].pixels
    assert d["checksums_checked"] == 8 and d["output_pixels"] == 8 * per_image
    assert d["pixels"] == sum(e.pixels for e in m.entries[:8])  # the source pixels decoded
    assert (d["decoder"], d["output"], d["delivery"]) == (decoder, output, "pixels")
    assert d["decoder_version"] and d["verify_seconds"] > 0
    assert segments() == before


def test_the_studys_cells_are_unchanged_by_the_new_keys(small_dataset):
    d = run_trial(TrialSpec(str(small_dataset), "decode", "processes", 6, 2)).to_dict()
    assert (d["decoder"], d["output"], d["delivery"]) == ("pillow", "full", "discard")
    assert d["output_pixels"] == d["pixels"] and d["checksums_checked"] == 0


def test_pixels_that_differ_from_the_reference_fail_the_trial(small_dataset, tmp_path):
    m = read_manifest(small_dataset)
    ref = tmp_path / "ref.csv"
    write_reference(ref, m.root, m.entries[:4], "opencv", "crop224")
    rows = ref.read_text().splitlines()
    cells = rows[3].split(",")
    cells[3] = str((int(cells[3]) + 1) % 2**32)  # image 2's checksum no longer matches
    ref.write_text("\n".join([*rows[:3], ",".join(cells), *rows[4:]]) + "\n")
    params = {"decoder": "opencv", "output": "crop224", "delivery": "pixels"}
    spec = TrialSpec(str(small_dataset), "decode", "processes-shm", 4, 2, params=params)
    with pytest.raises(VerificationError, match=f"{m.entries[2].path}.*checksum differs"):
        run_trial(replace(spec, reference=str(ref)))
    good = tmp_path / "good.csv"
    write_reference(good, m.root, m.entries[:4], "opencv", "crop224")
    rec = run_trial(replace(spec, reference=str(good)))
    assert rec.to_dict()["checksums_checked"] == 4
    with pytest.raises(UserError, match="reference of opencv/crop224, not simplejpeg/crop224"):
        run_trial(replace(spec, reference=str(good), params={**params, "decoder": "simplejpeg"}))


def test_full_size_pixels_that_do_not_fit_are_refused_before_the_clock(small_dataset, monkeypatch):
    monkeypatch.setattr(decode_phase, "mem_available_bytes", lambda: 1_000_000)
    m = read_manifest(small_dataset)
    needed = 10 * m.entries[0].pixels * 3
    params = {"delivery": "pixels"}
    with pytest.raises(UserError) as info:
        run_trial(TrialSpec(str(small_dataset), "decode", "threads", 10, 2, params=params))
    msg = str(info.value)
    assert "n=10" in msg and f"{needed / 1e9:.2f} GB" in msg and "0.00 GB of memory" in msg
    # the 224 crop of the same images fits
    params["output"] = "crop224"
    monkeypatch.setattr(decode_phase, "mem_available_bytes", lambda: 10 * 224 * 224 * 3 * 2)
    run_trial(TrialSpec(str(small_dataset), "decode", "threads", 10, 2, params=params))


def test_shared_memory_is_released_when_an_image_fails(tmp_path):
    ds = generate(
        tmp_path / "ds",
        GenerateParams(count=6, width=96, height=64, target_bytes=8000),
        progress=False,
    )
    m = read_manifest(ds)
    corrupt_keeping_size_and_mtime(m.root / m.entries[4].path)
    before = segments()
    params = {"decoder": "simplejpeg", "delivery": "pixels"}
    with pytest.raises(TrialError, match="decoder simplejpeg"):
        run_trial(TrialSpec(str(ds), "decode", "processes-shm", 6, 2, params=params))
    assert segments() == before


SHM_TRIAL = (
    "--phase",
    "decode",
    "--variant",
    "processes-shm",
    "--n",
    "150",
    "--workers",
    "2",
    "--decoder",
    "pillow",
    "--delivery",
    "pixels",
)


def _started_shm_trial(manifest, out, before):
    proc = start_trial(manifest, out, *SHM_TRIAL)
    return proc, wait_for_workers(proc, settle=0.3, ready=lambda: bool(segments() - before))


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_shared_memory_is_released_when_a_worker_is_killed(long_dataset, tmp_path):
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    proc = start_trial(long_dataset, out, *SHM_TRIAL, tmpdir=tmp)
    workers = wait_for_workers(proc, settle=0.3, ready=lambda: bool(shm_entries() - before))
    ended = kill_worker(proc, workers)
    cell = ("decode/processes-shm decoder=pillow output=full delivery=pixels", "n=150 workers=2")
    assert_failed_cleanly(ended, proc, out, tmp, before, *cell, "worker process died", "SIGKILL")


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_shared_memory_is_released_on_ctrl_c(long_dataset, tmp_path):
    before = segments()
    proc, workers = _started_shm_trial(long_dataset, tmp_path / "rec.json", before)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.split("imgread: interrupted")[-1]
    assert segments() == before and not (tmp_path / "rec.json").exists()
    assert not left_alive(workers)


def test_cli_records_every_key_of_the_cell(small_dataset, tmp_path):
    out = tmp_path / "rec.json"
    run_trial_cli(
        small_dataset,
        out,
        "--phase",
        "decode",
        "--variant",
        "threads",
        "--n",
        "4",
        "--workers",
        "2",
        "--decoder",
        "simplejpeg",
        "--output",
        "crop224",
        "--delivery",
        "pixels",
        check=True,
    )
    d = json.loads(out.read_text())
    assert (d["decoder"], d["output"], d["delivery"], d["checksums_checked"]) == (
        "simplejpeg",
        "crop224",
        "pixels",
        4,
    )
    r = run_trial_cli(
        small_dataset,
        out,
        "--phase",
        "load",
        "--variant",
        "sequential",
        "--n",
        "4",
        "--delivery",
        "pixels",
    )
    assert r.returncode == 2 and "--delivery do not apply to --phase load" in r.stderr
