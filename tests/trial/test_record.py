"""imgread.trial.record and the record a real trial makes (imgread.trial.run.record): its
columns, its rates from its own times, the dataset read once, and writing it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgread.dataset.folder import INFO_NAME
from imgread.dataset.manifest import MANIFEST_NAME, read_manifest
from imgread.trial import record
from imgread.trial.run import TrialSpec, run_trial


@pytest.fixture(scope="module")
def decoded(small_dataset):
    """A real record: 4 images decoded by 2 processes."""
    return run_trial(TrialSpec(str(small_dataset), "decode", "processes", 4, 2, repetition=3))


def test_a_real_records_rates_come_from_its_own_times_and_counts(decoded, small_dataset):
    r, m = decoded, read_manifest(small_dataset)
    entries = m.subset(4)
    assert (r.phase, r.variant, r.n_images, r.workers, r.repetition) == (
        "decode",
        "processes",
        4,
        2,
        3,
    )
    assert r.images == 4 and r.bytes == sum(e.bytes for e in entries)
    assert r.pixels == sum(e.width * e.height for e in entries)
    assert r.images_per_s == pytest.approx(4 / r.seconds)
    assert r.mb_per_s == pytest.approx(r.bytes / 1e6 / r.seconds)
    assert r.total_seconds == pytest.approx(r.seconds + r.startup_seconds)
    assert min(r.seconds, r.startup_seconds, r.prepare_seconds, r.shutdown_seconds) >= 0
    assert r.started_at <= r.finished_at and r.job_started_at == r.started_at
    # decode starts warm: read once and proven so, whatever the spec's cache method
    assert (r.cache_method, r.cache_state) == ("warm-read", "warm")
    assert r.dataset_id == m.dataset_id and r.dataset == m.root.name
    assert r.storage_kind == "local" and json.loads(r.storage_profile) == {}
    assert r.concurrency == 2 and r.extra["decoder"] == "pillow"


def test_to_dict_is_the_common_columns_then_the_phases(decoded):
    d = decoded.to_dict()
    keys = list(d)
    assert keys[:5] == ["phase", "variant", "n_images", "workers", "repetition"]
    phase_keys = list(decoded.extra)
    assert keys[-len(phase_keys) :] == phase_keys
    assert d["delivery"] == "discard" and d["hostname"] == decoded.hostname


def test_write_record_writes_the_json_atomically(decoded, tmp_path):
    out = tmp_path / "deep" / "trial.json"
    assert record.write_record(decoded, out) == out
    assert json.loads(out.read_text()) == json.loads(json.dumps(decoded.to_dict()))
    record.write_record(decoded, out)  # replaced whole, no temporary file left
    assert sorted(os.listdir(out.parent)) == ["trial.json"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_merge_columns_refuses_a_column_given_twice():
    assert record.merge_columns({"a": 1}, {}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(RuntimeError, match=r"given twice: \['b'\]"):
        record.merge_columns({"a": 1, "b": 2}, {"b": 3})


def test_platform_info_is_read_once_and_consistent():
    info = record.platform_info()
    assert info is record.platform_info()  # cached: one read per process
    assert 1 <= info["physical_cores"] <= info["logical_cores"] == (os.cpu_count() or 1)
    assert info["memory_total_bytes"] > 0
    assert set(info) <= set(record.TrialRecord.__dataclass_fields__)


def test_a_trial_reads_its_manifest_and_dataset_json_once(small_dataset, monkeypatch):
    # every read of either file in this process, whoever reads it (Path.read_text)
    reads: list[str] = []
    read_text = Path.read_text

    def counted(self, *args, **kwargs):
        if self.name in (MANIFEST_NAME, INFO_NAME):
            reads.append(self.name)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    for phase, variant in (("load", "sequential"), ("dataloader", "torch")):
        reads.clear()
        rec = run_trial(TrialSpec(str(small_dataset), phase, variant, 3, 1))
        assert sorted(reads) == sorted([MANIFEST_NAME, INFO_NAME]), phase
        assert rec.dataset_encoding == "as sampled" or rec.dataset_encoding.startswith("JPEG")
