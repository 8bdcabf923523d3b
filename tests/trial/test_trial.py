import json
import math
import os
from datetime import datetime

import pytest

from imgread.answer.analysis import load_records
from imgread.dataset import GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError
from imgread.trial.run import TrialRecord, TrialSpec, run_trial, write_record

FIELDS = [
    "phase",
    "variant",
    "n_images",
    "workers",
    "repetition",
    "seconds",
    "startup_seconds",
    "total_seconds",
    "bytes",
    "pixels",
    "images_per_s",
    "mb_per_s",
    "cache_method",
    "resident_fraction_before",
    "peak_rss_self_bytes",
    "peak_rss_children_bytes",
    "started_at",
    "finished_at",
    "hostname",
    "cpu_model",
    "logical_cores",
    "os",
    "python",
    "pillow",
    "aiofiles",
    "snakemake",
    "dataset_id",
]


@pytest.mark.parametrize(
    "phase,variant,workers",
    [
        ("load", "sequential", 1),
        ("load", "asyncio", 1),
        ("load", "threads", 2),
        ("decode", "sequential", 1),
        ("decode", "processes", 2),
        ("decode", "threads", 2),
    ],
)
def test_record_has_every_field_with_sane_values(small_dataset, tmp_path, phase, variant, workers):
    spec = TrialSpec(str(small_dataset), phase, variant, n_images=6, workers=workers, repetition=4)
    rec = run_trial(spec)
    d = rec.to_dict()
    for f in FIELDS:
        assert f in d and d[f] is not None, f
    m = read_manifest(small_dataset)
    assert (d["phase"], d["variant"], d["n_images"], d["workers"], d["repetition"]) == (
        phase,
        variant,
        6,
        workers,
        4,
    )
    assert d["seconds"] > 0 and d["startup_seconds"] >= 0
    assert d["total_seconds"] == pytest.approx(d["seconds"] + d["startup_seconds"])
    assert d["bytes"] == sum(e.bytes for e in m.subset(6))
    assert d["pixels"] == (sum(e.pixels for e in m.subset(6)) if phase == "decode" else 0)
    assert d["images_per_s"] == pytest.approx(6 / d["seconds"])
    assert d["mb_per_s"] == pytest.approx(d["bytes"] / 1e6 / d["seconds"])
    if phase == "load":
        assert d["cache_state"] == "cold" and d["resident_fraction_before"] <= 0.01
    else:
        assert d["cache_state"] == "warm" and d["resident_fraction_before"] >= 0.99
    start, end = (datetime.fromisoformat(d[k]) for k in ("started_at", "finished_at"))
    assert start.utcoffset().total_seconds() == 0 and start <= end
    assert d["logical_cores"] == os.cpu_count()
    assert d["peak_rss_self_bytes"] > 10_000_000
    assert d["dataset_id"] == m.dataset_id and len(d["dataset_id"]) == 16
    out = write_record(rec, tmp_path / "r" / "rec.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(d))
    assert not [p for p in out.parent.iterdir() if p.name != "rec.json"]


def test_process_startup_is_recorded_apart_from_the_work(small_dataset):
    rec = run_trial(TrialSpec(str(small_dataset), "decode", "processes", n_images=4, workers=2))
    assert rec.startup_seconds > 0 and rec.concurrency == 2
    assert math.isclose(rec.total_seconds, rec.seconds + rec.startup_seconds)


def test_bad_specs_are_user_errors(small_dataset):
    with pytest.raises(UserError, match="not parallel: workers must be 1"):
        run_trial(TrialSpec(str(small_dataset), "load", "sequential", 2, workers=2))
    with pytest.raises(UserError, match="unknown phase 'encode'"):
        run_trial(TrialSpec(str(small_dataset), "encode", "sequential", 2))
    with pytest.raises(UserError, match="unknown decode variant 'asyncio'"):
        run_trial(TrialSpec(str(small_dataset), "decode", "asyncio", 2))
    with pytest.raises(UserError, match="larger than the dataset"):
        run_trial(TrialSpec(str(small_dataset), "load", "sequential", 999))


def test_a_file_changed_after_the_manifest_is_refused(tmp_path):
    manifest = generate(
        tmp_path / "ds",
        GenerateParams(count=3, width=64, height=48, target_bytes=5000),
        progress=False,
    )
    m = read_manifest(manifest)
    victim = m.root / m.entries[1].path
    os.utime(victim, ns=(m.entries[1].mtime_ns, m.entries[1].mtime_ns + 10**9))
    with pytest.raises(UserError, match=f"changed after the manifest.*{victim.name}"):
        run_trial(TrialSpec(str(manifest), "load", "sequential", 3))


# One small trial of each built-in phase: its record, columns of its own included
ONE_OF_EACH_PHASE = [
    ("load", "sequential", 1, {}),
    ("decode", "sequential", 1, {}),
    ("dataloader", "torch", 0, {"batch_size": 4}),
    ("stream", "sequential", 1, {"decoder": "simplejpeg", "prefetch": 3}),
]
SCALARS = (str, int, float, bool, type(None))
# A stream record's per-frame times: not a column, the frames table (load_records takes it out)
NOT_A_COLUMN = {"frames"}


def test_trial_record_fields_are_flat(small_dataset, tmp_path):
    names = TrialRecord.__dataclass_fields__
    assert all(f in names for f in FIELDS)
    # flat: every value of a real record is one cell of trials.csv, never a list or a dict
    for phase, variant, workers, params in ONE_OF_EACH_PHASE:
        spec = TrialSpec(str(small_dataset), phase, variant, 4, workers, params=params)
        rec = run_trial(spec)
        d = rec.to_dict()
        nested = {k: type(v).__name__ for k, v in d.items() if not isinstance(v, SCALARS)}
        assert set(nested) <= NOT_A_COLUMN, f"{phase}/{variant}: not one cell: {nested}"
        assert set(FIELDS) <= set(d) and len(d) > len(FIELDS), phase  # the phase's own too
        # and so is its row of the trials table, read back from the file as aggregate does
        path = write_record(rec, tmp_path / phase / "rec.json")
        trials, frames = load_records([path])
        row = trials.iloc[0].to_dict()
        nested = {k: type(v).__name__ for k, v in row.items() if not isinstance(v, SCALARS)}
        assert nested == {}, f"{phase}/{variant}: trials.csv cells that are not one value: {nested}"
        assert len(frames) == (len(d["frames"]) if phase == "stream" else 0), phase
