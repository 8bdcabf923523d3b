"""Bad input and faults, built for real: messy folders, corrupted and changed files, a killed
worker, a full disk. (Config errors, interruption and read-only sources: test_robustness.py.)"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from imgread.dataset import GenerateParams, generate, sample, verify_hashes
from imgread.dataset.manifest import read_manifest
from imgread.decoders import DECODERS
from imgread.errors import TrialError, UserError
from imgread.trial.run import TrialSpec, run_trial

from ..support.deaths import (
    EXIT_BOUND_S,
    WORKERS_FAIL_TO_START,
    assert_failed_cleanly,
    first_child,
    kill_worker,
    shm_entries,
    wait_ended,
)
from ..support.helpers import (
    HAVE_PROC,
    corrupt_keeping_size_and_mtime,
    damaged_jpeg,
    make_messy_folder,
    photo,
    run_trial_cli,
    start_trial,
    tree_state,
    wait_for_workers,
)


@pytest.fixture
def messy(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    kinds = make_messy_folder(src)
    yield src, kinds
    os.chmod(src / "locked.jpg", 0o644)


def _skipped(out: Path) -> dict[str, str]:
    with open(out / "skipped.csv", newline="", encoding="utf-8") as fh:
        return {row["source_path"]: row["reason"] for row in csv.DictReader(fh)}


def test_sample_of_a_messy_folder_keeps_every_valid_image_and_lists_the_rest(messy, tmp_path):
    src, kinds = messy
    before = tree_state(src)
    valid = [k for k, v in kinds.items() if v == "valid"] + ["locked.jpg"]  # root can read it
    if os.geteuid() != 0:
        valid.remove("locked.jpg")
    manifest = sample(src, tmp_path / "out", count=len(valid) + 1, include_png=True, progress=False)
    m = read_manifest(manifest)
    assert len(m) == len(valid) + 1  # + the palette PNG
    for e in m.entries:  # CMYK, L and P images are valid and decode to RGB
        assert DECODERS["pillow"].count(str(m.root / e.path)) == e.width * e.height
    skipped = _skipped(tmp_path / "out")
    assert set(skipped) == {k for k, v in kinds.items() if v == "invalid"}
    assert "empty file" in skipped["empty.jpg"]
    assert "cannot identify image file" in skipped["notes.jpg"]
    assert "truncated" in skipped["truncated.jpg"].lower()
    assert "symbolic links" in skipped["self.jpg"]
    assert tree_state(src) == before


def test_sample_without_png_and_too_few_images_names_how_many_it_found(messy, tmp_path):
    src, kinds = messy
    n_valid = sum(v == "valid" for v in kinds.values()) + (os.geteuid() == 0)
    with pytest.raises(UserError, match=f"found {n_valid} valid images, fewer than the 50"):
        sample(src, tmp_path / "out", count=50, progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert (tmp_path / "out" / "skipped.csv").exists()


def test_on_invalid_fail_stops_at_the_first_invalid_file(messy, tmp_path):
    src, _ = messy
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgread",
            "dataset",
            "sample",
            "--source",
            str(src),
            "--out",
            str(tmp_path / "out"),
            "--count",
            "5",
            "--on-invalid",
            "fail",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid image" in r.stderr and "on_invalid=fail" in r.stderr
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_an_unreadable_file_is_skipped_for_a_non_root_user():
    """chmod 000 stops only non-root users: the sampling runs in a child that drops to uid
    65534 (when the tests run as root) after importing everything it needs."""
    top = Path(tempfile.mkdtemp(prefix="imgread-unreadable-"))
    try:
        os.chmod(top, 0o777)
        src = top / "photos"
        src.mkdir()
        photo(1).save(src / "ok.jpg", format="JPEG")
        photo(2).save(src / "locked.jpg", format="JPEG")
        os.chmod(src / "locked.jpg", 0)
        for p in (src, src / "ok.jpg"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        out = top / "out"
        code = (
            "import os, sys\n"
            "import numpy.random  # modules imported lazily must load before the uid drop\n"
            "from PIL import Image\n"
            "Image.init()\n"
            "from imgread.dataset import sample\n"
            "from imgread.errors import UserError\n"
            "from imgread.decoders.sandbox import Sandbox\n"
            # the decoders' sandbox is started before the drop: uid 65534 cannot run this
            # machine's Python (under /root); the read that must fail is the sampler's own
            "box = Sandbox().start()\n"
            "if os.geteuid() == 0:\n    os.setegid(65534); os.seteuid(65534)\n"
            f"sample({str(src)!r}, {str(out)!r}, count=1, seed=0, progress=False, sandbox=box)\n"
            f"try:\n    sample({str(src)!r}, {str(out)!r}, count=2, progress=False, sandbox=box)\n"
            "except UserError as e:\n    print(e)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "found 1 valid images, fewer than the 2" in r.stdout
        assert _skipped(out) == {"locked.jpg": "cannot read: Permission denied"}
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(top)], check=False)
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_a_file_a_strict_decoder_refuses_is_replaced_and_listed_with_that_decoder(tmp_path):
    from imgread.dataset.folder import read_info
    from imgread.dataset.sampling import checking_decoders

    strict = [n for n in ("simplejpeg", "turbojpeg") if DECODERS[n].available]
    if not strict:
        pytest.skip("no strict JPEG decoder installed")
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(4):
        photo(i, (320, 240)).save(src / f"good{i}.jpg", format="JPEG")
    for i in range(2):
        damaged_jpeg(src / f"flipped{i}.jpg", seed=i)
    out = tmp_path / "out"
    m = read_manifest(sample(src, out, count=4, progress=False))
    assert len(m) == 4
    with open(out / "sources.csv", newline="", encoding="utf-8") as fh:
        taken = sorted(row["source"] for row in csv.DictReader(fh))
    assert taken == [f"good{i}.jpg" for i in range(4)]
    skipped = _skipped(out)
    assert set(skipped) == {"flipped0.jpg", "flipped1.jpg"}
    for reason in skipped.values():  # Pillow reads them: the refusal is a strict decoder's
        assert re.match(rf"decoder ({'|'.join(strict)}): ", reason), reason
        assert "Corrupt JPEG data" in reason
    info = read_info(out)
    assert info["checked_by"] == checking_decoders() and set(strict) <= set(info["checked_by"])
    for e in m.entries:  # every image kept decodes under every decoder that checked it
        for name in info["checked_by"]:
            assert DECODERS[name].count(str(m.root / e.path)) == e.width * e.height


def test_on_invalid_fail_names_the_decoder_that_refused(tmp_path):
    if not DECODERS["simplejpeg"].available:
        pytest.skip("simplejpeg not installed")
    src = tmp_path / "photos"
    src.mkdir()
    damaged_jpeg(src / "flipped.jpg", seed=0)
    with pytest.raises(UserError, match=r"invalid image .*flipped.jpg: decoder \w+: "):
        sample(src, tmp_path / "out", count=1, on_invalid="fail", progress=False)


def test_on_invalid_keep_keeps_what_pillow_reads_and_lists_each_refusal(tmp_path):
    from imgread.dataset.refused import cell_refusal, read_refused

    if not DECODERS["simplejpeg"].available:
        pytest.skip("simplejpeg not installed")
    src = tmp_path / "photos"
    generate(src, GenerateParams(count=3, width=96, height=64, target_bytes=8000), progress=False)
    damaged_jpeg(src / "flipped.jpg", seed=0)
    (src / "empty.jpg").write_bytes(b"")  # nobody reads it: skipped even when keeping
    manifest = sample(src, tmp_path / "out", count=4, on_invalid="keep", progress=False)
    m = read_manifest(manifest)
    kept = {row["source"]: row["path"] for row in _csv(m.root / "sources.csv")}
    assert "flipped.jpg" in kept and len(m.entries) == 4
    assert [r["source_path"] for r in _csv(m.root / "skipped.csv")] == ["empty.jpg"]
    refused = read_refused(m.root)
    flipped = kept["flipped.jpg"]
    assert "simplejpeg" in refused and set(refused["simplejpeg"]) == {flipped}
    assert "pillow" not in refused  # what Pillow refuses is never kept
    assert "Corrupt JPEG data" in refused["simplejpeg"][flipped]
    n = len(m.entries)
    line = cell_refusal(manifest, n, "simplejpeg", "mine")
    assert line.startswith(
        f"decoder simplejpeg on dataset mine not measured: it refuses 1 of the {n}"
    )
    assert cell_refusal(manifest, n, "pillow", "mine") is None
    # a cell over images before the refused one reads none of it
    first = [e.path for e in m.entries].index(flipped)
    assert cell_refusal(manifest, first, "simplejpeg", "mine") is None
    info = json.loads((m.root / "dataset.json").read_text())
    assert info["on_invalid"] == "keep" and info["refused"] == len(
        [1 for d in refused.values() for _ in d]
    )


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def fresh_dataset(tmp_path):
    return generate(
        tmp_path / "ds",
        GenerateParams(count=6, width=96, height=64, target_bytes=8000),
        progress=False,
    )


@pytest.mark.parametrize(
    "variant,workers,decoder,delivery",
    [
        ("sequential", 1, "pillow", "discard"),
        ("processes", 2, "pillow", "discard"),
        ("threads", 2, "pillow", "discard"),
        ("sequential", 1, "opencv", "pixels"),
        ("processes", 2, "simplejpeg", "pixels"),
        ("threads", 2, "pillow-draft", "pixels"),
        ("processes-shm", 2, "opencv", "pixels"),
    ],
)
def test_an_image_that_no_longer_decodes_fails_the_trial_naming_it(
    fresh_dataset, variant, workers, decoder, delivery
):
    m = read_manifest(fresh_dataset)
    victim = m.root / m.entries[3].path
    corrupt_keeping_size_and_mtime(victim)
    params = {"decoder": decoder, "delivery": delivery}
    with pytest.raises(TrialError) as info:
        run_trial(TrialSpec(str(fresh_dataset), "decode", variant, 6, workers, params=params))
    msg = str(info.value)
    assert str(victim) in msg and f"decoder {decoder}:" in msg
    if decoder.startswith("pillow"):
        assert "cannot identify image file" in msg
    assert f"decode/{variant} decoder={decoder} output=full delivery={delivery} " in msg
    assert " n=6 " in msg
    assert f"workers={workers}" in msg and "no time recorded" in msg


def test_the_cli_writes_no_record_for_a_failed_trial(fresh_dataset, tmp_path):
    m = read_manifest(fresh_dataset)
    corrupt_keeping_size_and_mtime(m.root / m.entries[0].path)
    out = tmp_path / "rec.json"
    r = run_trial_cli(
        fresh_dataset, out, "--phase", "decode", "--variant", "sequential", "--n", "3"
    )
    assert r.returncode == 1 and "trial failed" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.glob(".rec.json*")) == []


def test_the_sha256_check_names_a_file_changed_behind_the_manifests_back(fresh_dataset):
    assert verify_hashes(fresh_dataset, progress=False) == 6
    m = read_manifest(fresh_dataset)
    victim = m.root / m.entries[2].path
    corrupt_keeping_size_and_mtime(victim)  # the cheap stat check cannot see this
    with pytest.raises(UserError, match=f"changed after the manifest.*{victim.name}.*sha256"):
        verify_hashes(fresh_dataset, progress=False)


def test_a_file_with_a_new_size_is_refused_by_every_trial(fresh_dataset):
    m = read_manifest(fresh_dataset)
    victim = m.root / m.entries[1].path
    with open(victim, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(UserError, match=f"changed after the manifest.*{victim.name}"):
        run_trial(TrialSpec(str(fresh_dataset), "decode", "sequential", 3))


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
@pytest.mark.parametrize("delivery", ["discard", "pixels"])
def test_a_killed_worker_fails_the_trial_naming_the_cell_and_leaves_no_worker(tmp_path, delivery):
    # pixels: the worker may die halfway through sending an image back (see the next test)
    manifest = generate(
        tmp_path / "ds",
        GenerateParams(count=150, width=1024, height=768, target_bytes=200_000),
        progress=False,
    )
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "decode", "--variant", "processes", "--delivery", delivery)
    proc = start_trial(manifest, out, *args, "--n", "150", "--workers", "2", tmpdir=tmp)
    ended = kill_worker(proc, wait_for_workers(proc, settle=0.3))
    cell = (f"decode/processes decoder=pillow output=full delivery={delivery}", "n=150 workers=2")
    assert_failed_cleanly(ended, proc, out, tmp, before, *cell, "killed by SIGKILL")


# A worker killed while it sends a result leaves half a message in the result pipe: CPython's
# executor then waits forever for the rest (and so would the trial); imgread's must not.
KILLED_WHILE_SENDING = """
import os, signal, sys, time
from imgread.trial.pools import process_pool, named_death

def big(i):
    return b"x" * (64 << 20)  # most of a worker's time goes to sending it

pool = process_pool(2)
results = pool.map(big, range(8))
time.sleep(float(sys.argv[1]))
os.kill(next(iter(pool._processes)), signal.SIGKILL)
try:
    list(results)
except Exception as exc:
    print(named_death(pool, exc))
pool.shutdown(wait=True, cancel_futures=True)
"""


@pytest.mark.parametrize("after", [0.3, 0.5, 0.7])
def test_a_worker_killed_while_sending_a_result_breaks_the_pool_at_once(after):
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_SENDING, str(after)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"worker process \d+ was killed by SIGKILL .*\n", r.stdout), r.stdout
    assert time.monotonic() - t0 < after + EXIT_BOUND_S


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
@pytest.mark.parametrize("variant", ["processes", "processes-shm"])
def test_a_worker_that_cannot_start_fails_the_trial_naming_the_cause(
    small_dataset, tmp_path, variant
):
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "decode", "--variant", variant, "--delivery", "pixels", "--n", "8")
    proc = start_trial(
        small_dataset, out, *args, "--workers", "2", prelude=WORKERS_FAIL_TO_START, tmpdir=tmp
    )
    ended = wait_ended(proc, *first_child(proc))
    cell = (f"decode/{variant} decoder=pillow output=full delivery=pixels", "n=8 workers=2")
    cause = "failed to start: ImportError: no module for the pillow decoder in this worker"
    assert_failed_cleanly(ended, proc, out, tmp, before, *cell, cause)


def _mount_small_fs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return r.returncode == 0


def test_generation_on_a_full_disk_stops_clearly_and_leaves_no_partial_image(tmp_path):
    small = tmp_path / "small"
    if _mount_small_fs(small, "600k"):
        try:
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "imgread",
                    "dataset",
                    "generate",
                    "--out",
                    str(small / "ds"),
                    "--count",
                    "40",
                    "--width",
                    "320",
                    "--height",
                    "240",
                    "--target-bytes",
                    "50000",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            files = sorted((small / "ds" / "images").iterdir())
            names = [p.name for p in files]
            complete = []
            for p in files:
                with Image.open(p) as img:
                    img.load()  # a partial file would fail here
                complete.append(p.name)
        finally:
            subprocess.run(["umount", "-l", str(small)], check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "No space left on device" in r.stderr and "free some space" in r.stderr
        assert "could not write" in r.stderr
        assert all(not n.startswith(".") for n in names) and complete == names
        assert not (small / "ds" / "manifest.csv").exists()
    else:  # no mount here: a real write failure from a file-size limit instead
        code = (
            "import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))\n"
            "from imgread.cli.main import main\n"
            f"sys.exit(main(['dataset', 'generate', '--out', {str(small)!r}, '--count', '4',"
            " '--width', '320', '--height', '240', '--target-bytes', '50000', '--workers', '1']))"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 2 and "could not write" in r.stderr
        assert [p for p in (small / "images").iterdir()] == []
