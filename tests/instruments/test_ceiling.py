"""The device ceiling: with fio when it is on PATH, with the O_DIRECT reader when it is not,
cold before every run, and never writing to the dataset. Its workflow rule, with and without
fio: tests/workflow/test_ceiling_workflow.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError
from imgread.instruments.ceiling import measure_device, split

from ..support.helpers import path_without

HAVE_FIO = shutil.which("fio") is not None


def path_without_fio(tmp_path: Path) -> str:
    """A PATH with every command of this one except fio."""
    return path_without(tmp_path, "fio")


def _fingerprint(manifest: Path) -> list[tuple[str, int, int]]:
    m = read_manifest(manifest)
    return [
        (e.path, (m.root / e.path).stat().st_size, (m.root / e.path).stat().st_mtime_ns)
        for e in m.entries
    ]


def _check(result: dict, manifest: Path, jobs: list[int], repetitions: int) -> None:
    assert result["files"] == len(read_manifest(manifest).entries)
    assert len(result["runs"]) == len(jobs) * repetitions
    assert all(r["resident_fraction_before"] <= 0.01 for r in result["runs"])
    assert all(r["bytes"] > 0 and r["mb_per_s"] > 0 for r in result["runs"])
    medians = result["median_mb_per_s_by_jobs"]
    assert set(medians) == {str(j) for j in jobs}
    assert result["device_mb_per_s"] == max(medians.values())
    assert medians[str(result["best_jobs"])] == result["device_mb_per_s"]


@pytest.mark.skipif(not HAVE_FIO, reason="fio is not installed (make test installs it as root)")
def test_with_fio_on_path_fio_measures_and_its_version_is_recorded(small_dataset):
    before = _fingerprint(small_dataset)
    result = measure_device(small_dataset, jobs=[1, 2], repetitions=2)
    assert result["method"] == "fio" and result["fio_version"].startswith("fio-")
    _check(result, small_dataset, [1, 2], 2)
    assert _fingerprint(small_dataset) == before  # --readonly: nothing written


def test_without_fio_the_o_direct_reader_measures(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without_fio(tmp_path))
    assert shutil.which("fio") is None
    result = measure_device(small_dataset, jobs=[1, 4], repetitions=2)
    assert result["method"] == "odirect" and result["fio_version"] == "not used"
    _check(result, small_dataset, [1, 4], 2)


def test_asking_for_fio_without_it_is_one_clear_error(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without_fio(tmp_path))
    with pytest.raises(UserError, match="fio is not on PATH"):
        measure_device(small_dataset, method="fio", repetitions=1)


def test_readers_share_the_files_without_overlap():
    files = [Path(f"f{i}") for i in range(10)]
    shares = split(files, 4)
    assert len(shares) == 4 and sorted(sum(shares, [])) == sorted(files)
    assert len(split(files, 16)) == 10  # never a reader with nothing to read
