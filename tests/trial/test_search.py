"""The bounded search (imgread.trial.search) on probes whose threshold is known."""

import pytest

from imgread.trial.search import Outcome, highest_passing


def _threshold(limit, seen):
    def probe(value):
        seen.append(value)
        return Outcome(value <= limit, float(value))

    return probe


def test_counts_double_then_halve_to_the_exact_threshold():
    seen = []
    got = highest_passing(_threshold(11, seen), 1, None, max_probes=20, integer=True)
    assert got.best == 11
    assert seen[:5] == [1, 2, 4, 8, 16]  # doubling until 16 fails
    assert set(seen[5:]) <= set(range(9, 16)) and not got.exhausted
    assert [r["ok"] for r in got.rows()] == [v <= 11 for v in seen]


def test_rates_bisect_geometrically_within_the_resolution():
    got = highest_passing(_threshold(123.0, []), 10.0, 1000.0, max_probes=30)
    assert got.best <= 123.0 and got.best * 1.05 >= 123.0
    assert got.probes[0][0] == 1000.0 and got.probes[1][0] == 100.0  # halved from above
    assert 10.0 not in [v for v, _ in got.probes]  # the costly bottom is never asked


def test_the_budget_bounds_the_probes_and_says_so():
    seen = []
    got = highest_passing(_threshold(123.0, seen), 10.0, 1000.0, max_probes=4)
    assert len(seen) == 4 and got.exhausted and 10.0 <= got.best <= 123.0


def test_a_passing_top_ends_the_search_at_once():
    got = highest_passing(_threshold(5000.0, []), 10.0, 1000.0, max_probes=10)
    assert got.best == 1000.0 and len(got.probes) == 1


@pytest.mark.parametrize("limit, best", [(1.0, None), (10.0, 10.0)], ids=["none", "bottom"])
def test_where_everything_above_fails_the_bottom_is_measured(limit, best):
    seen = []
    got = highest_passing(_threshold(limit, seen), 10.0, 1000.0, max_probes=40)
    assert got.best == best and seen[-1] == 10.0 and not got.exhausted


def test_a_bad_bracket_is_refused():
    with pytest.raises(ValueError, match="bracket"):
        highest_passing(_threshold(1, []), 0, 10, max_probes=3)
