"""Speedup, ceiling fraction and the pipeline table on hand-made records with known answers."""

import pandas as pd
import pytest

from imgread.answer.analysis import phase_tables, render_table, speedup, summarize, with_all_keys
from imgread.phases.dataloader.tables import dataloader_workers
from imgread.phases.decode.tables import pipeline_table, study_cells
from imgread.phases.registry import PHASES


def _rows(variant, workers, seconds, delivery="discard", decoder="opencv", output="full", n=10):
    return [
        dict(
            phase="decode",
            variant=variant,
            decoder=decoder,
            output=output,
            delivery=delivery,
            n_images=n,
            workers=workers,
            repetition=i,
            seconds=s,
            total_seconds=s + 0.5,
            startup_seconds=0.5,
            images_per_s=n / s,
            megapixels_per_s=n * 12 / s,
            mb_per_s=n * 4 / s,
            physical_cores=2,
            logical_cores=2,
        )
        for i, s in enumerate(seconds)
    ]


@pytest.fixture
def trials():
    return with_all_keys(
        pd.DataFrame(
            _rows("sequential", 1, [2.0, 2.0])  # the decoder alone: 5 images/s
            + _rows("sequential", 1, [4.0, 4.0], delivery="pixels")  # keeping arrays costs
            + _rows("threads", 2, [1.0, 1.0])
            + _rows("processes", 2, [4.0, 4.0], delivery="pixels")
            + _rows("processes-shm", 4, [1.6, 1.6], delivery="pixels")
            + _rows("sequential", 1, [3.0, 3.0], decoder="pillow")
            + _rows("processes", 2, [2.0, 2.0], decoder="pillow")
        )
    )


def test_speedup_is_against_the_same_keys_and_ceiling_against_the_decoders_own_rate(trials):
    s = speedup(trials, resamples=50).set_index(["variant", "decoder", "delivery", "workers"])
    threads = s.loc[("threads", "opencv", "discard", 2)]
    assert threads.speedup == pytest.approx(2.0) and threads.efficiency == pytest.approx(1.0)
    assert threads.ceiling_fraction == pytest.approx(1.0)  # 10 images/s of a 2 x 5 ceiling
    proc = s.loc[("processes", "opencv", "pixels", 2)]
    assert proc.speedup == pytest.approx(1.0)  # against sequential pixels (4 s)
    assert proc.ceiling_fraction == pytest.approx(2.0 / 4.0 / 2)  # 2.5 of a 10 images/s ceiling
    shm = s.loc[("processes-shm", "opencv", "pixels", 4)]
    assert shm.speedup == pytest.approx(2.5) and shm.efficiency == pytest.approx(2.5 / 4)
    assert shm.ceiling_fraction == pytest.approx(2.0 / 1.6 / 2)  # min(4 workers, 2 cores)
    pil = s.loc[("processes", "pillow", "discard", 2)]
    assert pil.speedup == pytest.approx(1.5) and pil.speedup_total == pytest.approx(3.5 / 2.5)


def test_summary_keeps_cells_with_different_keys_apart(trials):
    summary = summarize(trials)
    assert len(summary) == 7
    seq = summary[(summary.variant == "sequential") & (summary.decoder == "opencv")]
    assert sorted(seq.mean_seconds) == [2.0, 4.0]
    assert set(study_cells(summary).variant) == {"sequential", "processes"}


def test_summary_names_the_one_core_rate_its_cpu_ceiling_was_built_from(trials):
    s = summarize(trials).set_index(["variant", "decoder", "delivery", "workers"])
    shm = s.loc[("processes-shm", "opencv", "pixels", 4)]
    # the decoder alone, pixels discarded: 5 images/s over 2 repetitions, x min(4, 2 cores)
    assert shm.ceiling_one_core_images_per_s == pytest.approx(5.0)
    assert shm.ceiling_one_core_repetitions == 2
    assert shm.ceiling_fraction == pytest.approx((10 / 1.6) / (5.0 * 2))


def test_pipeline_table_has_medians_speedups_and_ceilings(trials):
    table = pipeline_table(trials, summarize(trials), speedup(trials, resamples=10))
    row = table[(table.variant == "threads")].iloc[0]
    assert row.median_images_per_s == pytest.approx(10.0)
    assert row.median_megapixels_per_s == pytest.approx(120.0)
    assert row.ceiling_fraction == pytest.approx(1.0) and row.repetitions == 2


def _loader_row(workers, rate, repetition=0, **settings):
    """A DataLoader trial's row as dataloader_workers reads it (opencv from JPEG, 640 images,
    2 cores, unless ``settings`` say otherwise)."""
    row = dict(
        phase="dataloader",
        variant="torch",
        decoder="opencv",
        source="jpeg",
        batch_size="32",
        page_cache="warm",
        pin_memory="false",
        n_images=640,
        physical_cores=2,
    )
    return dict(row, **settings, workers=workers, repetition=repetition, images_per_s=rate)


def test_dataloader_workers_names_the_best_count_and_where_more_hurt():
    rates = {0: [9, 9], 1: [10, 10], 2: [19, 19.2], 4: [18.5, 18.5], 8: [15, 15]}
    rows = [_loader_row(w, r, i) for w, rs in rates.items() for i, r in enumerate(rs)]
    table = dataloader_workers(pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame())
    assert len(table) == 1
    row = table.iloc[0]
    assert row.images_per_s_w1 == 10 and row.best_workers == 2
    assert row.best_images_per_s == pytest.approx(19.1)
    assert row.best_over_cores_x_w1 == pytest.approx(19.1 / 20)
    assert row.images_per_s_w0 == 9 and row.best_over_cores_x_w0 == pytest.approx(19.1 / 18)
    assert row.hurts_from_workers == 8  # 18.5 is within 5 % of 19.1; 15 is not


def test_dataloader_workers_keeps_a_blocks_settings_apart():
    # the same decoder, source and n before and after the fix: two lines, not one median
    rows = [
        _loader_row(
            w,
            rate * (1 if w == 0 else 1.8),
            decoder="pillow",
            allocator=alloc,
            normalize=normalize,
            collate=collate,
        )
        for alloc, normalize, collate, rate in [
            ("default", "item", "fresh", 100),
            ("tuned", "batch", "pooled", 130),
        ]
        for w in (0, 2)
    ]
    table = dataloader_workers(pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame())
    assert list(table.collate) == ["fresh", "pooled"] and list(table.allocator) == [
        "default",
        "tuned",
    ]
    assert list(table.best_images_per_s) == [180, 234]
    assert list(table.best_over_cores_x_w0) == pytest.approx([0.9, 0.9])


def test_phase_tables_are_every_phases_tables_in_registry_order(trials):
    summary, speed = summarize(trials), speedup(trials, resamples=10)
    built = phase_tables(trials, summary, speed)
    assert [t.file for t, _ in built] == [t.file for p in PHASES.values() for t in p.tables]
    tables = {t.stem: (t, df) for t, df in built}
    table, df = tables["decode_pipeline"]
    pd.testing.assert_frame_equal(df, pipeline_table(trials, summary, speed))
    assert render_table(table, df).startswith(f"# {table.title}\n\n{table.note}\n\n| n_images |")
    table, df = tables["dataloader_workers"]  # no DataLoader rows: an empty table, its header
    assert df.empty and render_table(table, df) == ",".join(df.columns) + "\n"


def test_phase_tables_of_several_machines_have_a_machine_column_even_where_a_phase_has_none(
    trials,
):
    two = pd.concat([trials, trials.assign(machine="other")], ignore_index=True)
    tables = {t.stem: df for t, df in phase_tables(two, summarize(two), speedup(two, resamples=10))}
    assert list(tables["decode_pipeline"]["machine"].unique()) == ["local", "other"]
    assert tables["load_table"].columns[0] == "machine" and tables["load_table"].empty
