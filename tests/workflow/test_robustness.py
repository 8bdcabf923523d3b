"""The workflow under bad configs, real interruptions and a read-only photo folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imgread.dataset import GenerateParams, generate, verify_hashes
from imgread.errors import UserError
from imgread.plan.grid import blocks
from imgread.util import write_text_atomic

from ..support.helpers import (
    ROOT,
    check_like_the_workflow,
    copy_project,
    damaged_jpeg,
    smoke_config,
    snakemake,
    tree_state,
)

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("robust") / "imgread")


def _run_with(project: Path, override: dict, *extra: str, check=False):
    path = project / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return snakemake(
        project,
        "--cores",
        "1",
        "--configfile",
        "config/smoke.yaml",
        "override.yaml",
        *extra,
        check=check,
    )


BAD_CONFIGS = {
    "size zero": ({"sizes": [0, 4]}, "config 'sizes[0]': 0 is less than the minimum of 1"),
    "size negative": ({"sizes": [-3]}, "config 'sizes[0]': -3 is less than the minimum of 1"),
    "size larger than the dataset": (
        {"sizes": [4, 99]},
        "config 'sizes': 99 is larger than the dataset",
    ),
    "workers zero": (
        {"phases": {"decode": {"threads": {"workers": [0, 2]}}}},
        "config 'phases.decode.threads.workers[0]': 0 is less than the minimum",
    ),
    "workers negative": (
        {"phases": {"load": {"threads": {"workers": [-2]}}}},
        "config 'phases.load.threads.workers[0]': -2 is less than the minimum",
    ),
    "unknown variant": (
        {"phases": {"load": {"mmap": {"workers": [1]}}}},
        "config 'phases.load': unknown key(s) ['mmap']; allowed: "
        "['asyncio', 'processes', 'sequential', 'threads']",
    ),
    "unknown phase": (
        {"phases": {"encode": {"sequential": {"workers": [1]}}}},
        "config 'phases': unknown key(s) ['encode']; allowed: ['dataloader', 'decode', 'load', "
        "'stream']",
    ),
    "repetitions zero": (
        {"repetitions": 0},
        "config 'repetitions': 0 is less than the minimum of 1",
    ),
    "source missing": (
        {"dataset": {"source": "/no/such/photos"}},
        "config 'datasets[0].source': /no/such/photos does not exist",
    ),
    # the datasets list and its shards (the data issue)
    "unknown dataset in a block": (
        {"phases": {"load": {"threads": {"workers": [2], "dataset": ["nope"]}}}},
        "config 'phases.load.threads.dataset': unknown dataset(s) ['nope']; the config's "
        "datasets are ['smoke']",
    ),
    "a dataset name twice": (
        {"datasets": [{"name": "smoke", "count": 8}, {"name": "smoke", "count": 4}]},
        "config 'datasets[1].name': 'smoke' is used twice",
    ),
    "shards the dataset does not list": (
        {"phases": {"load": {"threads": {"workers": [2], "shard_mb": [0, 4]}}}},
        "config 'phases.load.threads.shard_mb': dataset smoke is not packed into [4] MB "
        "shards (its shards_mb is empty: list the sizes to pack)",
    ),
    "a shard smaller than one image": (
        {"datasets": [{"name": "big", "count": 8, "target_bytes": 4_000_000, "shards_mb": [1]}]},
        "config 'datasets[0].shards_mb': 1 MB is smaller than one image of dataset big",
    ),
    "source shards without shard sizes": (
        {"phases": {"dataloader": {"torch": {"workers": [0], "source": ["shards"]}}}},
        "config 'phases.dataloader.torch.source': shards needs the shard sizes to read",
    ),
    "an unknown format": (
        {"datasets": [{"name": "smoke", "count": 8, "format": "gif"}]},
        "config 'datasets[0].format': 'gif' is not one of",
    ),
    # the storage profiles and their faults (the storage issue, the failing-server item)
    "a storage setting of the wrong type": (
        {"storage": [{"name": "s3", "kind": "http", "latency_ms": "fast"}]},
        "storage profile 's3': latency_ms must be a number, got 'fast'",
    ),
    "a storage profile no one defined": (
        {"phases": {"load": {"threads": {"workers": [2], "storage": ["s3"]}}}},
        "config 'phases': storage profile(s) ['s3'] are not defined",
    ),
    "fault shares above one": (
        {"storage": [{"name": "s3", "kind": "http", "fault_503": 0.7, "fault_reset": 0.5}]},
        "storage profile 's3': fault_503 + fault_reset + fault_stall must be at most 1",
    ),
    "a dataset count of the wrong type": (
        {"datasets": [{"name": "smoke", "count": "many"}]},
        "config 'datasets[0].count': 'many' is not of type 'integer'",
    ),
    "a memory budget with a unit": (
        {"analysis": {"memory_budget": "2GB"}},
        "config 'analysis.memory_budget': '2GB' is not of type 'integer'",
    ),
    "unknown cache method": (
        {"cache": {"method": "cold"}},
        "config 'cache.method': 'cold' is not one of",
    ),
    "saturate without room": (
        {"cache": {"method": "saturate", "saturate_bytes": 10**16}},
        "config 'cache.saturate_bytes': cache method 'saturate' needs",
    ),
}


# One case per section goes through the real workflow (the run stops before any job, with the
# line); every case goes through the workflow's own checks in order, in this process
# (:func:`_checked`), which is what the workflow runs first.
THROUGH_THE_WORKFLOW = (
    "size zero",
    "unknown dataset in a block",
    "a storage setting of the wrong type",
    "a memory budget with a unit",
)


@pytest.mark.parametrize("case", THROUGH_THE_WORKFLOW)
def test_a_bad_config_is_rejected_before_any_job(project, case):
    override, message = BAD_CONFIGS[case]
    proc = _run_with(project, override)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in out, out[-3000:]
    assert not (project / "results" / "datasets").exists()  # no job ran


def _checked(override: dict) -> None:
    """What the workflow does with ``--configfile config/smoke.yaml override`` before any job."""
    check_like_the_workflow(smoke_config(override))


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_every_bad_config_is_one_line_naming_the_field(case):
    override, message = BAD_CONFIGS[case]
    with pytest.raises(UserError) as err:
        _checked(override)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_smoke_config_itself_passes_the_checks():
    _checked({})  # so that every case above fails for its own reason


def test_a_source_folder_without_images_is_rejected_before_any_job(project, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no photos here")
    proc = _run_with(project, {"dataset": {"source": str(tmp_path / "empty")}})
    assert proc.returncode != 0
    assert f"config 'datasets[0].source': {tmp_path / 'empty'} holds no images" in proc.stderr
    assert not (project / "results" / "datasets").exists()


def test_drop_caches_is_rejected_for_a_non_root_user():
    """The config check runs in a child that drops to uid 65534 after importing, as a real
    non-root user would run it (the tests may run as root)."""
    code = (
        "import os, yaml\n"
        "from imgread.plan.checks import check_config\n"
        "from imgread.errors import UserError\n"
        f"cfg = yaml.safe_load(open({str(ROOT / 'config/config.yaml')!r}))\n"
        "cfg['cache']['method'] = 'drop_caches'\n"
        "if os.geteuid() == 0:\n    os.seteuid(65534)\n"
        "try:\n    check_config(cfg)\nexcept UserError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "config 'cache.method': drop_caches needs root" in r.stdout, r.stderr


# --------------------------------------------------------------------------- interruption


def _processes_in(folder: Path) -> list[int]:
    """PIDs (other than ours) whose working directory is inside ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == str(folder) or cwd.startswith(f"{folder}/")):
            found.append(int(proc.name))
    return found


def _interrupt_config(saturate_dir: Path) -> dict:
    return {
        "dataset": {
            "name": "intr",
            "count": 300,
            "width": 1024,
            "height": 768,
            "target_bytes": 150_000,
        },
        "sizes": [300],
        "repetitions": 1,
        "phases": {
            "load": {
                "sequential": {"workers": [1]},
                "asyncio": {"workers": []},
                "threads": {"workers": []},
            },
            "decode": {
                "sequential": {"workers": [1]},
                "processes": {"workers": [2]},
                "threads": {"workers": []},
                "processes-shm": {"workers": []},
            },
            "dataloader": {"torch": {"workers": []}},
            "stream": {
                v: {"workers": []}
                for v in ("sequential", "processes", "threads", "thread-per-frame", "asyncio")
            },
        },
        # saturate (with a small file, which cannot make anything cold: the limit is lifted)
        # so that a temporary file exists to be cleaned up.
        "cache": {
            "method": "saturate",
            "saturate_bytes": 100_000_000,
            "saturate_dir": str(saturate_dir),
            "max_resident_fraction": 1.0,
        },
        "ceiling": {"jobs": [1], "repetitions": 1},  # quick: the trials are what is stopped
        "searches": [],
    }


def _start(project: Path, config: dict) -> subprocess.Popen:
    (project / "override.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--configfile",
            "config/smoke.yaml",
            "override.yaml",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # as from a terminal: a shell without job control starts background jobs with SIGINT
        # ignored, and Python keeps an inherited SIG_IGN (then Ctrl-C would do nothing)
        preexec_fn=_as_from_a_terminal,
    )


def _as_from_a_terminal():
    os.setsid()  # its own process group, as a shell job: Ctrl-C signals the whole group
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def _trials(project: Path) -> tuple[list[Path], list[Path]]:
    root = project / "results" / "trials" / "intr"
    logs = project / "results" / "logs" / "trials" / "intr"
    done = sorted(root.rglob("*.json")) if root.exists() else []
    started = sorted(logs.rglob("*.log")) if logs.exists() else []
    return done, started


# How a run gets stopped. Ctrl-C in a terminal sends SIGINT to the whole foreground process
# group (Snakemake, the job, its workers); a service manager or `kill -- -PGID` sends SIGTERM
# to the group; `kill PID` sends SIGTERM to Snakemake alone, which Snakemake treats as
# "finish the running jobs, start no new ones".
STOPS = {
    "ctrl-c (SIGINT to the group)": (signal.SIGINT, True),
    "SIGTERM to the group": (signal.SIGTERM, True),
    "SIGTERM to snakemake": (signal.SIGTERM, False),
}


def _gone_within(project: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_in(project)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("stop", sorted(STOPS))
@pytest.mark.parametrize("stage", ["generation", "trial"])
def test_an_interrupted_run_leaves_nothing_half_done_and_resumes(tmp_path, stop, stage):
    sig, to_group = STOPS[stop]
    project = copy_project(tmp_path / "imgread")
    sat = tmp_path / "saturate"
    sat.mkdir()
    config = _interrupt_config(sat)
    images = project / "results" / "datasets" / "intr" / "images"
    proc = _start(project, config)
    if stage == "trial":
        caught = _wait_for(
            lambda: (
                len(_trials(project)[0]) >= 1
                and len(_trials(project)[1]) > len(_trials(project)[0])
            ),
            proc,
        )
    else:
        caught = _wait_for(lambda: images.exists() and len(list(images.iterdir())) >= 20, proc)
    assert caught, f"the {stage} was never caught running"
    done_before = {p: p.stat().st_mtime_ns for p in _trials(project)[0]}
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0 or not to_group, output[-3000:]
    assert _gone_within(project, 10) == [], "a job or worker process was left running"
    assert list(sat.iterdir()) == [], "the saturate file was left on disk"
    manifest = project / "results" / "datasets" / "intr" / "manifest.csv"
    if stage == "generation" and to_group:
        assert not manifest.exists(), output[-3000:]
    if manifest.exists():  # only ever a complete, consistent dataset
        assert verify_hashes(manifest, progress=False) == 300
    for path in _trials(project)[0]:  # whatever is there is a complete record
        record = json.loads(path.read_text())
        assert record["seconds"] > 0 and record["images"] == 300

    # Running again resumes, keeps every completed trial and finishes them (to the tables: the
    # figures and the report after them are not what an interruption can leave half done).
    (project / "override.yaml").write_text(yaml.safe_dump(config))
    configs = ("--configfile", "config/smoke.yaml", "override.yaml")
    snakemake(project, "aggregate", "--cores", "2", *configs)
    done_after = _trials(project)[0]
    assert len(done_after) == 3
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was rerun"
    assert list(sat.iterdir()) == []


# --------------------------------------------------------------------------- user's data


def _one_cell_per_variant(config: dict) -> dict:
    """``config``'s phases with every variant cut to one cell: its first block, the first value
    of each of its lists (every phase and reader still reads the dataset, at a fraction of the
    smoke run's trials)."""
    return {
        phase: {
            variant: {
                k: v[:1] if isinstance(v, list) else v for k, v in blocks(settings)[0].items()
            }
            for variant, settings in variants.items()
        }
        for phase, variants in config["phases"].items()
    }


def test_the_smoke_workflow_on_a_read_only_photo_folder_changes_nothing_in_it(tmp_path):
    project = copy_project(tmp_path / "imgread")
    src = tmp_path / "my photos"
    generate(
        src,
        GenerateParams(count=8, width=320, height=240, target_bytes=40_000, seed=9),
        progress=False,
    )
    # all 11 files are visited to find 8 good ones: 3 damaged photos Pillow decodes and the
    # strict decoders (the smoke's simplejpeg) refuse
    for i in (0, 1, 3):
        damaged_jpeg(src / f"damaged{i}.jpg", seed=i)
    subprocess.run(["chmod", "-R", "a-w", str(src)], check=True)
    try:
        before = tree_state(src)
        smoke = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
        override = {
            "dataset": {"name": "mine", "source": str(src), "count": 8},
            "phases": _one_cell_per_variant(smoke),
        }
        (project / "override.yaml").write_text(yaml.safe_dump(override))
        # to the tables: the figures read the records, never the photos
        configs = ("--configfile", "config/smoke.yaml", "override.yaml")
        run = snakemake(project, "aggregate", "--cores", "2", *configs)
        assert tree_state(src) == before
        assert (project / "results/tables/trials.csv").is_file()
        assert (project / "results/datasets/mine/manifest.csv").is_file()
        # the study ran to its end past the damaged files, with no traceback anywhere
        with open(project / "results/datasets/mine/skipped.csv", newline="") as fh:
            skipped = {row["source_path"]: row["reason"] for row in csv.DictReader(fh)}
        assert set(skipped) == {"damaged0.jpg", "damaged1.jpg", "damaged3.jpg"}
        assert all("Corrupt JPEG data" in why for why in skipped.values()), skipped
        assert "Traceback" not in run.stdout + run.stderr
        for log in (project / "results/logs").rglob("*"):
            if log.is_file():
                assert "Traceback" not in log.read_text(errors="replace"), log
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(src)], check=False)


def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "shared.csv", "a\n")
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.csv", "a\n")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.csv").stat().st_mode & 0o777 == 0o600


def test_on_invalid_keep_measures_what_each_decoder_reads_and_says_what_it_left_out(tmp_path):
    project = copy_project(tmp_path / "imgread")
    src = tmp_path / "my photos"
    generate(
        src,
        GenerateParams(count=6, width=320, height=240, target_bytes=40_000, seed=9),
        progress=False,
    )
    for i in (0, 1):  # Pillow reads them; simplejpeg refuses them
        damaged_jpeg(src / f"damaged{i}.jpg", seed=i)
    cell = {"workers": [1], "sizes": [8], "repetitions": 1}
    smoke = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    phases = {p: {v: {"workers": []} for v in vs} for p, vs in smoke["phases"].items()}
    phases["load"]["sequential"] = cell
    phases["decode"]["sequential"] = {**cell, "decoder": ["pillow", "simplejpeg"]}
    phases["dataloader"]["torch"] = {
        **cell,
        "workers": [0],
        "decoder": ["simplejpeg"],
        "source": ["cache-npy"],
        "batch_size": [2],
    }
    override = {
        "dataset": {"name": "mine", "source": str(src), "count": 8, "on_invalid": "keep"},
        "sizes": [8],
        "phases": phases,
        "searches": [],
    }
    (project / "override.yaml").write_text(yaml.safe_dump(override))
    configs = ("--configfile", "config/smoke.yaml", "override.yaml")
    run = snakemake(project, "aggregate", "--cores", "2", *configs)  # to the answer
    trials = pd.read_csv(project / "results/tables/trials.csv")
    measured = set(zip(trials["phase"], trials["decoder"].fillna("-"), strict=True))
    assert ("decode", "pillow") in measured and ("load", "-") in measured
    assert not any(d == "simplejpeg" for _, d in measured), measured
    answer = (project / "results/tables/recommendation.md").read_text()
    line = "Not measured here: decoder simplejpeg on dataset mine not measured: it refuses 2 of"
    assert line in answer
    assert "Traceback" not in run.stdout + run.stderr
    for log in (project / "results/logs").rglob("*"):
        if log.is_file():
            assert "Traceback" not in log.read_text(errors="replace"), log
