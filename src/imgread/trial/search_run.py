"""One search of a config run to its end: the first probe, the bracket it sets, the bounded
search (imgread.trial.search.highest_passing), every probe a whole trial; its summary.

The first probe runs at the key's ``first`` value. Where that is the key's "none" (0: the
DataLoader's unloaded trial, measuring the pipeline's own rate) it only sets the bracket;
otherwise it is a probe like the others (a failure there ends the search: nothing higher can
pass). Every probe counts against ``max_probes``, the first included. A value the key's grid
Param holds as a whole number is rounded before its trial (``to_value``); two values that
round alike are measured once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from imgread.trial.search import Outcome, Result, SearchKey, highest_passing


def run_search(
    key: SearchKey,
    max_probes: int,
    trial: Callable[[float, int], dict],
    *,
    to_value: Callable[[float], float] = float,
    log: Callable[[str], None] = print,
    label: str = "search",
) -> dict:
    """Run the search; ``trial(value, k)`` runs probe k (1-based) at ``value`` and returns its
    record as a dict. Returns the summary (docs/searches.md): best, metric_at_best, probes,
    exhausted, bounds, first, probe_values (value, ok, metric, probe)."""
    probes: list[dict] = []
    measured: dict[float, tuple[Outcome, int]] = {}

    def measure(value: float) -> tuple[dict, Outcome]:
        k = len(probes) + 1
        record = trial(value, k)
        outcome = key.goal(record)
        unloaded = k == 1 and not key.first  # the key's "none": no probe of the goal
        if unloaded:
            said = f"{record.get('images_per_s', math.nan):.4g} images/s unloaded"
        else:
            said = f"{key.metric} {outcome.metric:.3g}, {'pass' if outcome.ok else 'fail'}"
        log(f"{label} probe {k}/{max_probes}: {key.name}={_text(value)} -> {said}")
        probes.append(
            {
                "value": value,
                "ok": None if unloaded else outcome.ok,
                "metric": outcome.metric,
                "probe": k,
            }
        )
        return record, outcome

    first_record, first = measure(to_value(key.first))
    unloaded = not key.first
    measured[to_value(key.first)] = (first, 1)
    lo, hi = key.bounds(first_record)
    result = Result(best=None)
    if (unloaded or first.ok) and max_probes > 1:  # a failing first probe: none higher passes

        def probe(value: float) -> Outcome:
            value = to_value(value)
            if value not in measured:
                measured[value] = (measure(value)[1], len(probes))
            return measured[value][0]

        result = highest_passing(probe, lo, hi, max_probes=max_probes - 1, integer=key.integer)
    return _summary(key, probes, result, (lo, hi), first_record)


def _summary(key: SearchKey, probes: list[dict], result: Result, bounds, first: dict) -> dict:
    """The search's summary: the highest value measured to pass among the probes."""
    passed = [p for p in probes if p["ok"]]
    best = max(passed, key=lambda p: p["value"]) if passed else None
    return {
        "key": key.name,
        "goal": key.describe,
        "metric": key.metric,
        "best": best["value"] if best else None,
        "metric_at_best": best["metric"] if best else None,
        "probes": len(probes),
        "exhausted": bool(result.exhausted),
        "bounds": list(bounds),
        "first": {
            "value": probes[0]["value"],
            "metric": probes[0]["metric"],
            "images_per_s": first.get("images_per_s"),
        },
        "probe_values": probes,
    }


def probe_values(summary: dict) -> str:
    """The probes of a summary as searches.csv writes them: 'value:ok:metric;...' (the
    unloaded first trial left out: it is no probe of the goal)."""
    return ";".join(
        f"{_text(p['value'])}:{str(p['ok']).lower()}:{_metric(p['metric'])}"
        for p in summary["probe_values"]
        if p["ok"] is not None
    )


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _metric(value) -> str:
    return (
        "nan"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.4g}"
    )


# searches.csv, one row per search: exactly these columns (docs/searches.md)
COLUMNS = [
    "name",
    "phase",
    "variant",
    "dataset",
    "storage",
    "workers",
    "n",
    "settings",
    "key",
    "best",
    "metric_at_best",
    "probes",
    "exhausted",
    "goal",
    "probe_values",
]


def search_row(summary: dict) -> dict:
    """A summary's row of searches.csv (best empty where no probe passed)."""
    row = {c: summary.get(c) for c in COLUMNS}
    row["best"] = "" if summary.get("best") is None else _text(summary["best"])
    row["metric_at_best"] = "" if summary.get("best") is None else summary["metric_at_best"]
    row["exhausted"] = bool(summary.get("exhausted", False))
    row["probe_values"] = probe_values(summary)
    return row


def searches_table(paths: list[str]) -> pd.DataFrame:
    """searches.csv from the searches' summaries (a header alone where there are none)."""
    rows = [search_row(json.loads(Path(p).read_text())) for p in paths]
    return pd.DataFrame(rows, columns=COLUMNS)
