"""imgread.answer.compare: two trials.csv tables matched by cell, outcomes compared exactly,
measurements shown as medians side by side."""

from __future__ import annotations

import pandas as pd

from imgread.answer.compare import compare, is_measured, main, timing_medians


def _trials(**change) -> pd.DataFrame:
    rows = [
        {
            "phase": "load",
            "variant": "threads",
            "n_images": 8,
            "workers": w,
            "repetition": r,
            "dataset": "smoke",
            "machine": "local",
            "storage": "local",
            "images": 8,
            "bytes": 4000,
            "seconds": 0.01 * (w + r),
            "images_per_s": 800.0 / (w + r),
            "cache_state": "cold",
            "extra": f"{{'probe_seconds': {w * 1e-5}}}",
        }
        for w in (1, 2)
        for r in (0, 1)
    ]
    frame = pd.DataFrame(rows)
    for col, (row, value) in change.items():
        frame.loc[row, col] = value
    return frame


def test_the_same_cells_and_outcomes_with_other_timings_are_the_same():
    before, after = _trials(), _trials(seconds=(0, 9.0), images_per_s=(3, 1.0))
    c = compare(before, after)
    assert c.same and c.cells == 4
    assert "seconds" in c.measured and "extra" in c.measured and "bytes" in c.compared
    med = timing_medians(before, after).set_index(["phase", "column"])
    assert med.loc[("load", "seconds"), "before"] == before["seconds"].median()
    assert med.loc[("load", "seconds"), "after"] == after["seconds"].median()


def test_a_changed_outcome_a_missing_cell_and_a_new_column_are_reported(tmp_path, capsys):
    before = _trials()
    after = _trials(bytes=(1, 4001), cache_state=(2, "warm")).drop(index=3)
    after["new_column"] = 1
    c = compare(before, after)
    assert not c.same
    assert set(c.differences) == {"bytes", "cache_state"}
    ((cell, b, a),) = c.differences["bytes"]
    assert (b, a) == ("4000", "4001") and cell[:5] == ("load", "threads", "8", "1", "1")
    assert len(c.only_before) == 1 and c.only_after == []
    assert c.columns_only_after == ["new_column"]
    before.to_csv(tmp_path / "b.csv", index=False)
    after.to_csv(tmp_path / "a.csv", index=False)
    assert main([str(tmp_path / "b.csv"), str(tmp_path / "a.csv")]) == 1
    assert "column 'bytes' differs in 1 cells" in capsys.readouterr().out


def test_settings_that_look_like_measurements_are_compared():
    assert is_measured("startup_seconds") and is_measured("latency_p99_ms")
    assert not is_measured("memory_method") and not is_measured("pin_memory_effective")
    assert not is_measured("checksums_checked") and not is_measured("decoder_version")


def test_identities_a_run_makes_afresh_are_not_outcomes():
    # the same data generated again has other mtimes, so another dataset id; a namespace
    # gets another address: neither is a change of what the trial did
    before = _trials().assign(dataset_id="2ba77ab3092c7d0e", storage_address="10.213.5.66:8080")
    after = _trials().assign(dataset_id="6a18754ccee7db94", storage_address="10.213.81.98:8080")
    assert compare(before, after).same
    assert not compare(before, after.assign(bytes=4001)).same  # an outcome still counts
