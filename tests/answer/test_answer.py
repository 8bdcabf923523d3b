"""The scaling model, the recommendation and the noise flags, on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgread.answer.analysis import flag_interference, summarize, with_all_keys
from imgread.answer.recommend import choose, markdown, recommend, rst
from imgread.answer.scaling import fit_usl, usl
from imgread.answer.stats import mean_ci, rate_ci
from imgread.instruments.noise import CpuSnapshot, interference

# ---------------------------------------------------------------- the USL fit


@pytest.mark.parametrize(("a", "b"), [(0.05, 0.002), (0.2, 0.01), (0.02, 0.0005)])
def test_usl_fit_recovers_a_and_b_from_noisy_speedups(a, b):
    rng = np.random.default_rng(1)
    workers = np.repeat([1, 2, 4, 8, 12, 16, 24, 32], 10)
    speedups = usl(workers, a, b) * (1 + rng.normal(0, 0.01, len(workers)))
    fit = fit_usl(workers, speedups)
    assert fit["status"] == "ok"
    assert fit["a"] == pytest.approx(a, rel=0.10)
    assert fit["b"] == pytest.approx(b, rel=0.10)
    assert fit["peak_workers"] == pytest.approx(np.sqrt((1 - a) / b), rel=0.10)
    assert fit["rmse"] < 0.05 * usl(32, a, b)


def test_amdahl_is_the_usl_without_coherency():
    workers = np.array([1, 2, 4, 8, 16] * 3)
    fit = fit_usl(workers, usl(workers, 0.1, 0.0))
    assert fit["b"] == pytest.approx(0.0, abs=1e-6)
    assert fit["amdahl_serial_fraction"] == pytest.approx(0.1, rel=0.01)
    assert fit["peak_workers"] > 1000  # no peak within any pool one could build


def test_a_curve_with_too_few_worker_counts_says_so_instead_of_a_number():
    fit = fit_usl([1, 1, 2, 2], [1.0, 1.0, 1.8, 1.9])
    assert fit["status"].startswith("not fitted: 2 worker count(s)")
    assert np.isnan(fit["a"]) and np.isnan(fit["b"]) and np.isnan(fit["peak_workers"])


# ---------------------------------------------------------------- the recommendation


def _trials(cells: dict[tuple[str, int], list[float]], n: int = 100, **keys) -> pd.DataFrame:
    """Decode trials (full, discard, pillow) whose megapixels/s are the given values."""
    rows = []
    for (variant, workers), rates in cells.items():
        for r, rate in enumerate(rates):
            rows.append(
                dict(
                    phase="decode",
                    variant=variant,
                    decoder=keys.get("decoder", "pillow"),
                    output="full",
                    delivery="discard",
                    n_images=n,
                    workers=workers,
                    repetition=r,
                    seconds=100.0 / rate,
                    startup_seconds=0.01,
                    total_seconds=100.0 / rate + 0.01,
                    megapixels_per_s=rate,
                    images_per_s=rate / 10,
                    mb_per_s=rate / 5,
                    physical_cores=4,
                    logical_cores=4,
                    interference_fraction=0.0,
                    steal_seconds=0.0,
                    other_cpu_seconds=0.0,
                )
            )
    return with_all_keys(pd.DataFrame(rows))


def _recommend(trials):
    trials = flag_interference(trials, 0.1)
    return recommend(trials, summarize(trials))


def test_the_clear_best_cell_is_recommended_with_its_rate_and_speedup():
    t = _trials(
        {
            ("sequential", 1): [100, 101, 99],
            ("processes", 2): [190, 192, 188],
            ("processes", 4): [370, 380, 375],
        }
    )
    rec = _recommend(t).iloc[0]
    assert (rec["variant"], rec["workers"]) == ("processes", 4)
    assert rec["median"] == 375 and rec["as_good_as_best"] == 1
    assert rec["speedup_over_default"] == pytest.approx(3.75)
    assert rec["default_choice"].startswith("sequential x1")
    # one core gives 100; 4 usable cores: 375 / 400
    assert rec["ceiling_kind"] == "cpu" and rec["ceiling_fraction"] == pytest.approx(0.9375)
    assert rec["ceiling_one_core_images_per_s"] == 10 and rec["ceiling_one_core_repetitions"] == 3
    assert 350 < rec["ci_low"] < 375 < rec["ci_high"] < 400 and not rec["too_few_repetitions"]
    md = markdown(_recommend(t))
    assert "| 375 megapixels/s [362.8, 387.6] |" in md and "| 94% (cpu) |" in md


def test_a_tie_within_5_percent_goes_to_the_fewest_workers():
    t = _trials(
        {
            ("sequential", 1): [100, 100, 100],
            ("processes", 2): [196, 197, 195],
            ("threads", 4): [200, 201, 199],
            ("processes", 8): [204, 205, 203],
        }
    )
    rec = _recommend(t).iloc[0]
    assert (rec["variant"], rec["workers"]) == ("processes", 2)
    assert (rec["best_variant"], rec["best_workers"]) == ("processes", 8)
    assert rec["as_good_as_best"] == 3


def test_a_noisy_cell_does_not_win_on_one_lucky_repetition():
    # threads x2 has one repetition far above the rest: its mean (200) beats the steady best
    # (processes x2, 150), its median (100) does not, and its wide interval must not make it
    # "as good as the best" either.
    t = _trials(
        {
            ("sequential", 1): [80, 80, 80],
            ("threads", 2): [100, 100, 400],
            ("processes", 2): [150, 151, 149],
        }
    )
    rec = _recommend(t).iloc[0]
    assert (rec["variant"], rec["workers"]) == ("processes", 2)
    assert rec["as_good_as_best"] == 1


def test_choose_with_lower_is_better():
    cells = pd.DataFrame({"workers": [1, 2, 4], "median": [30.0, 10.0, 10.3]})
    chosen, best, good = choose(cells, higher=False)
    assert (chosen, best, good) == (1, 1, 2)


def test_a_row_per_n_only_where_the_answer_changes():
    small = _trials({("sequential", 1): [100] * 3, ("processes", 2): [120] * 3}, n=10)
    mid = _trials({("sequential", 1): [100] * 3, ("processes", 2): [180] * 3}, n=100)
    large = _trials({("sequential", 1): [100] * 3, ("processes", 2): [190] * 3}, n=1000)
    rec = _recommend(pd.concat([small, mid, large], ignore_index=True))
    assert list(rec["n_images"]) == [1000]
    assert rec.iloc[0]["also_for_n"] == "10, 100"
    # at 10 images the pool does not pay: sequential wins there, so it gets its own row
    small = _trials({("sequential", 1): [100] * 3, ("processes", 2): [60] * 3}, n=10)
    rec = _recommend(pd.concat([small, mid, large], ignore_index=True))
    assert list(rec["n_images"]) == [10, 1000]
    assert rec.iloc[0]["variant"] == "sequential" and rec.iloc[1]["variant"] == "processes"
    assert "10" in markdown(rec) and "processes x2" in markdown(rec)


def test_every_job_of_a_phase_gets_its_own_answer():
    full = _trials({("sequential", 1): [100] * 3, ("processes", 2): [190] * 3})
    crop = full.assign(output="crop224")
    rec = _recommend(pd.concat([full, crop], ignore_index=True))
    assert sorted(rec["job"]) == [
        "output=crop224, delivery=discard",
        "output=full, delivery=discard",
    ]


def test_the_default_choice_is_the_default_decoder_when_it_was_measured():
    pillow = _trials({("sequential", 1): [100] * 3})
    fast = _trials({("sequential", 1): [300] * 3, ("threads", 2): [580] * 3}, decoder="simplejpeg")
    rec = _recommend(pd.concat([pillow, fast], ignore_index=True)).iloc[0]
    assert rec["settings"] == "decoder=simplejpeg, allocator=default" and rec["workers"] == 2
    assert rec["default_choice"] == "sequential x1, decoder=pillow, allocator=default"
    assert rec["speedup_over_default"] == pytest.approx(5.8)


# ---------------------------------------------------------------- no impossible numbers


def _rate_cell(md: str) -> str:
    """The rate cell of the first row of the answer's Markdown table."""
    row = next(line for line in md.splitlines() if line.startswith("| ") and "x1" in line)
    return row.split(" | ")[5]


def test_two_repetitions_say_too_few_repetitions_and_give_no_bound():
    # measured twice, far apart: the t-interval of the mean was [-9969, 12069] here
    t = _trials({("sequential", 1): [100, 2000]})
    assert mean_ci(np.array([100.0, 2000.0]))[0] < 0
    rec = _recommend(t)
    row = rec.iloc[0]
    assert row["too_few_repetitions"] and row["repetitions"] == 2
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    cell = _rate_cell(markdown(rec))
    assert cell == "1050 megapixels/s (too few repetitions)" and "-" not in cell
    assert "     - 1050 megapixels/s (too few repetitions)" in rst(rec)  # the report's table
    one = _recommend(_trials({("sequential", 1): [100]})).iloc[0]  # one repetition too
    assert one["too_few_repetitions"] and np.isnan(one["ci_low"])


def test_a_wide_spread_of_repetitions_gives_an_interval_above_zero_around_the_median():
    rates = [20, 100, 900, 60, 400]
    assert mean_ci(np.array(rates, dtype=float))[0] < 0  # what the answer used to print
    rec = _recommend(_trials({("sequential", 1): rates})).iloc[0]
    assert not rec["too_few_repetitions"]
    assert 0 < rec["ci_low"] < rec["median"] == 100 < rec["ci_high"]
    again = _recommend(_trials({("sequential", 1): rates})).iloc[0]
    assert (again["ci_low"], again["ci_high"]) == (rec["ci_low"], rec["ci_high"])  # no chance
    cell = _rate_cell(markdown(_recommend(_trials({("sequential", 1): rates}))))
    assert cell.startswith("100 megapixels/s [") and "-" not in cell


def test_the_rate_interval_is_the_reciprocal_of_the_time_interval_and_needs_positive_rates():
    rates = np.array([20.0, 100.0, 900.0, 60.0, 400.0])
    lo, hi = rate_ci(rates)
    tlo, thi = rate_ci(1 / rates)
    assert (lo, hi) == pytest.approx((1 / thi, 1 / tlo))
    geo = np.exp(np.log(rates).mean())
    assert lo * hi == pytest.approx(geo**2)  # symmetric around the geometric mean, in factors
    assert all(np.isnan(rate_ci(np.array(v))).all() for v in ([5.0], [5.0, 0.0], [5.0, -1.0]))


def test_a_fraction_of_the_cpu_ceiling_above_100_percent_says_why():
    # the one-core cell measured twice, slowly: a pool of 2 reaches 150 % of 2 x its median
    t = _trials({("sequential", 1): [50, 50], ("processes", 2): [150, 150, 150]})
    rec = _recommend(t)
    row = rec.iloc[0]
    assert (row["variant"], row["workers"]) == ("processes", 2)
    assert row["ceiling_fraction"] == pytest.approx(1.5)  # kept as measured, not capped
    assert row["ceiling_one_core_images_per_s"] == 5 and row["ceiling_one_core_repetitions"] == 2
    md = markdown(rec)
    assert "| 150% (cpu; one-core rate is a noisy median of 2 repetitions) |" in md
    assert "above 100 % with the reason" in md  # and the paragraph under the table says why
    assert "t-interval on the log of the rate" in md


# ---------------------------------------------------------------- noise


def _snap(steal, user, own):
    machine = dict(user=user, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=steal)
    return CpuSnapshot(machine=machine, own_seconds=own)


def test_interference_counts_steal_and_other_processes_cpu():
    cols = interference(_snap(0, 0, 0), _snap(0.5, 3.0, 2.0), seconds=2.0, cpus=2)
    assert cols["own_cpu_seconds"] == 2.0
    assert cols["steal_seconds"] == 0.5
    assert cols["other_cpu_seconds"] == pytest.approx(1.0)
    assert cols["interference_fraction"] == pytest.approx(1.5 / 4)


def test_trials_past_the_threshold_are_flagged_and_counted_per_cell():
    t = _trials({("sequential", 1): [100, 100, 100]})
    t.loc[1, ["interference_fraction", "other_cpu_seconds"]] = (0.3, 0.6)
    t.loc[2, ["interference_fraction", "other_cpu_seconds"]] = (0.3, 0.01)  # counting error
    flagged = flag_interference(t, 0.1)
    assert list(flagged["interfered"]) == [False, True, False]
    s = summarize(flagged)
    assert s["interfered_trials"].iloc[0] == 1
    assert s["median_interference_fraction"].iloc[0] == pytest.approx(0.3)


def test_summary_shows_median_beside_mean_and_the_cv():
    t = _trials({("sequential", 1): [100, 100, 50]})
    s = summarize(t).iloc[0]
    times = 100.0 / np.array([100, 100, 50])
    assert s["mean_seconds"] == pytest.approx(times.mean())
    assert s["median_seconds"] == pytest.approx(1.0)
    assert s["cv"] == pytest.approx(times.std(ddof=1) / times.mean())
    assert s["median_megapixels_per_s"] == 100


def test_a_curve_that_does_not_scale_peaks_at_one_worker():
    workers = np.array([1, 2, 4, 8] * 3)
    fit = fit_usl(workers, np.ones(len(workers)))
    assert fit["a"] == pytest.approx(1.0, abs=1e-3) and fit["peak_workers"] == 1.0


def _loader_trials(cells: dict[tuple[str, int, str], list[float]]) -> pd.DataFrame:
    """DataLoader trials (batch 32, warm, local) whose images/s are the given values, keyed by
    (variant, workers, decoder)."""
    rows = []
    for (variant, workers, decoder), rates in cells.items():
        for r, rate in enumerate(rates):
            rows.append(
                dict(
                    phase="dataloader",
                    variant=variant,
                    decoder=decoder,
                    n_images=64,
                    workers=workers,
                    repetition=r,
                    seconds=64 / rate,
                    startup_seconds=1.0,
                    total_seconds=64 / rate + 1.0,
                    images_per_s=rate,
                    megapixels_per_s=rate / 5,
                    mb_per_s=rate / 10,
                    physical_cores=2,
                    logical_cores=2,
                    interference_fraction=0.0,
                    steal_seconds=0.0,
                    other_cpu_seconds=0.0,
                )
            )
    return with_all_keys(pd.DataFrame(rows))


def test_the_dataloader_answer_gives_its_speedup_over_imagefolders_best_cell():
    t = _loader_trials(
        {
            ("torch", 2, "simplejpeg"): [300, 310, 305],
            ("torch", 1, "pillow"): [150, 150, 150],
            ("torchvision-imagefolder", 1, "pillow"): [90, 91, 89],
            ("torchvision-imagefolder", 2, "pillow"): [120, 122, 118],  # its best setting
        }
    )
    rec = _recommend(t).iloc[0]
    assert (rec["variant"], rec["workers"]) == ("torch", 2)
    assert rec["x_imagefolder"] == pytest.approx(305 / 120)
    assert "| 2.54 |" in markdown(_recommend(t))
    # not measured (on an object store it reads no folder): no figure, a dash in the table
    bare = _recommend(t[t["variant"] != "torchvision-imagefolder"]).iloc[0]
    assert np.isnan(bare["x_imagefolder"])
    # the decode phase has no such start: NaN there too
    assert np.isnan(
        _recommend(_trials({("sequential", 1): [100, 101, 99]})).iloc[0]["x_imagefolder"]
    )
