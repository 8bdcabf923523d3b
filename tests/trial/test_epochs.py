"""page_cache limited (imgread.trial.epochs): the limit from its inputs, the LRU comparison, a
limited torch trial through run_trial with its hit ratio against a second measure (the files'
residency, mincore), and an out-of-memory condition as a failed trial naming the limit."""

from __future__ import annotations

import os

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import TrialError, UserError
from imgread.instruments import page_cache as cachectl
from imgread.instruments.memcg import current_cgroup, file_pages
from imgread.phases.dataloader.limited import lru_hit_ratio
from imgread.phases.registry import PHASES
from imgread.plan.grid import Cell, path_params
from imgread.trial import epochs
from imgread.trial.run import TrialSpec, run_trial

LIMITED = dict(page_cache="limited", decoder="pillow", batch_size="4")


def test_the_limit_is_the_peak_plus_a_margin_plus_the_share_of_the_data():
    mib = 1 << 20
    # 5 % of 1000 MiB is 50 MiB, above the 16 MiB floor; a fifth of 500 MiB is 100 MiB
    assert epochs.memory_limit(1000 * mib, 500 * mib, 0.2) == 1150 * mib
    # a small peak takes the floor
    assert epochs.memory_limit(10 * mib, 100 * mib, 0.5) == 10 * mib + 16 * mib + 50 * mib


def test_hit_ratio_and_steady_rate():
    assert epochs.hit_ratio(1000, 250) == 0.75
    assert epochs.hit_ratio(1000, 1100) == pytest.approx(-0.1)  # readahead: not clamped
    assert epochs.steady_rate([10.0, 40.0, 20.0, 30.0]) == 30.0  # the first left out
    assert epochs.steady_rate([10.0]) == 10.0


def test_a_pure_lru_cache_over_fresh_shuffles_by_hand():
    # every item fits: all misses in the first epoch, all hits after
    assert lru_hit_ratio(5, 5, 3, trials=3) == [0.0, 1.0, 1.0]
    assert lru_hit_ratio(5, 0, 3, trials=3) == [0.0, 0.0, 0.0]  # no cache
    # 2 items, 1 slot: epoch 2 hits only if it starts with the item epoch 1 ended on (1/2),
    # and then its second read misses: 1 hit in 2 reads half the time -> 1/4
    second = lru_hit_ratio(2, 1, 2, trials=4000, seed=1)[1]
    assert second == pytest.approx(0.25, abs=0.03)
    # a fifth of the data cached: far less than a fifth hit (docs/limited.md)
    steady = lru_hit_ratio(1000, 200, 4, trials=20)[1:]
    assert all(0.01 < h < 0.1 for h in steady)


def test_limited_keys_are_out_of_the_path_at_their_defaults_and_redundant_elsewhere():
    phase = PHASES["dataloader"]
    params = phase.resolve({})
    kept = path_params(phase, params)  # a cell's params, as the grid makes them
    cell = Cell("dataloader", "torch", 8, 1, 0, tuple(kept.items()), dataset="ds")
    assert "cache_share" not in cell.path("t") and "epochs" not in cell.path("t")
    limited = path_params(phase, phase.resolve({"page_cache": "limited", "epochs": "3"}))
    cell = Cell("dataloader", "torch", 8, 1, 0, tuple(limited.items()), dataset="ds")
    assert "epochs-3" in cell.path("t") and "cache_share" not in cell.path("t")
    assert phase.redundant("torch", phase.resolve({"epochs": "3"}))  # warm: not its key
    assert "epochs of at least 2" in phase.unsupported("torch", phase.resolve(LIMITED))
    assert "torch pipeline" in phase.unsupported(
        "tf-data", phase.resolve({**LIMITED, "epochs": "2"})
    )
    assert "cache_share" not in phase.record_fields(params)


needs_cgroup = pytest.mark.skipif(current_cgroup() is None, reason="no memory cgroup here")


@needs_cgroup
def test_a_limited_trial_measures_its_hit_ratio_as_the_files_residency_says(small_dataset):
    """cache_share 1: nothing is evicted, so what the first epoch read from the device must
    be what came into the page cache (mincore, before and after), and the later epochs read
    nothing; a second, independent measure of the bytes the device served."""
    spec = TrialSpec(
        str(small_dataset),
        "dataloader",
        "torch",
        12,
        1,
        params={**LIMITED, "epochs": "3", "cache_share": "1"},
    )
    rec = run_trial(spec).to_dict()
    files = _files(small_dataset)
    after = cachectl.resident_fraction(files)
    assert rec["cache_state"] == "cold" and rec["resident_fraction_before"] <= 0.01
    first, *later = rec["epochs_measured"]
    pages = sum(-(-os.path.getsize(f) // 4096) for f in files)
    came_in = (after - rec["resident_fraction_before"]) * pages * 4096
    assert first["bytes_read"] == pytest.approx(came_in, rel=0.05)
    assert first["cache_hit_ratio"] < 0.1
    assert all(e["bytes_read"] == 0 and e["cache_hit_ratio"] == 1.0 for e in later)
    assert [e["images"] for e in rec["epochs_measured"]] == [12, 12, 12]
    assert rec["memory_limit_bytes"] == epochs.memory_limit(
        rec["calibration_peak_bytes"], rec["dataset_bytes"], 1.0
    )
    assert rec["memory_limit_max_bytes"] >= rec["memory_limit_bytes"]  # it follows the peak
    assert rec["steady_images_per_s"] == pytest.approx(rec["images_per_s"])
    assert rec["cache_share"] == "1" and rec["epochs"] == "3" and rec["shuffle_seed"] == 2028


@needs_cgroup
def test_running_out_of_memory_under_the_limit_is_a_failed_trial_naming_it(
    small_dataset, monkeypatch
):
    monkeypatch.setattr(epochs, "memory_limit", lambda peak, data, share: peak // 8)
    spec = TrialSpec(
        str(small_dataset), "dataloader", "torch", 12, 1, params={**LIMITED, "epochs": "2"}
    )
    with pytest.raises(TrialError, match="out of memory under the limit of \\d+ bytes"):
        run_trial(spec)


@needs_cgroup
def test_running_out_of_memory_inside_an_epoch_is_a_failed_trial_nothing_killed(
    small_dataset, monkeypatch
):
    """A limit just above what the trial holds once calibrated: its batches in flight need
    more, the cgroup goes under OOM, the watcher lifts the limit, the trial fails."""
    set_limit = epochs.Limit.set

    def tight(limit):
        folder = limit.cgroup.folder
        usage = int((folder / "memory.usage_in_bytes").read_text())
        limit.bytes = usage - file_pages(limit.cgroup.version, folder) + (1 << 20)
        limit.room = -1  # a fixed limit: not raised as the trial's memory grows
        set_limit(limit)

    monkeypatch.setattr(epochs.Limit, "set", tight)
    spec = TrialSpec(
        str(small_dataset), "dataloader", "torch", 12, 1, params={**LIMITED, "epochs": "2"}
    )
    with pytest.raises(TrialError, match="out of memory under the limit of \\d+ bytes"):
        run_trial(spec)


def test_a_limited_trial_without_a_memory_cgroup_is_refused(small_dataset, monkeypatch):
    monkeypatch.setenv("IMGREAD_MEMORY", "pss")
    spec = TrialSpec(
        str(small_dataset), "dataloader", "torch", 12, 0, params={**LIMITED, "epochs": "2"}
    )
    with pytest.raises(UserError, match="needs a memory cgroup"):
        run_trial(spec)


def _files(manifest) -> list[str]:
    m = read_manifest(manifest)
    return [str(m.root / e.path) for e in m.entries]
