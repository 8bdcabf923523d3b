"""The answer's training rows in accelerators (the profiles: imgread.answer.accelerators):
how much of one accelerator this machine feeds (measured), and, projected on paper from the
measured rates, what one accelerator would need (docs/accelerators.md).

An accelerator profile (config ``accelerators:``) consumes images at ``images_per_s`` at 100 %
busy: batch_size / step_s, as MLPerf Storage's DLIO emulates a training step. For every
training row (a phase whose pipeline hands batches to a training step: it takes the key
``batch_size``), every pipeline library and every storage profile and page-cache state
measured, at the largest n, the library's own cell chosen as the answer chooses (the fewest
workers within the tolerance of its best median), and per accelerator profile:

- ``measured_share``: the cell's median images/s over the accelerator's rate (measured);
- ``projected_cores_upper_bound``: the accelerator's rate x the CPU seconds per image the
  trial's processes used (measured): the cores needed if the rate grew with the cores, which
  per-core rate x cores never beats (an upper bound on the rate, so the fewest cores);
- ``projected_workers_usl``: the workers the USL fit of the library's curve (imgread.answer.
  scaling) needs to reach the rate, only where the fit has data beyond one core; NaN with the
  reason in ``usl_note`` otherwise (or where the fitted curve peaks below the rate);
- ``projected_in_flight_little``: requests in flight by Little's law, rate x latency per
  request / images per request (the probe's latency, measured, else the profile's);
- ``projected_mb_per_s`` against ``allowed_mb_per_s`` (the probe's bandwidth, measured; else
  the profile's cap; for local files read cold, the device ceiling, measured);
- ``binds_first``: which of cores, requests in flight and bandwidth is furthest from what this
  machine ran with (need / have), the first to raise;
- where a search measured it (results/tables/searches.csv, key ``accel_rate``), the highest
  simulated-accelerator rate kept >= 90 % busy, and its share of the profile's rate; where the
  cell ran with a limited page cache, its ``steady_images_per_s`` and its share.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from imgread.answer.accelerators import Accelerator
from imgread.answer.keys import CURVE, NO_PARAM
from imgread.answer.recommend import choose
from imgread.answer.scaling import usl
from imgread.answer.text import TOLERANCE
from imgread.phases.base import Phase
from imgread.phases.registry import PHASES
from imgread.storage.registry import DEFAULT, get_kind

TRAINING_KEY = "batch_size"  # a phase taking it hands batches to a training step
SEARCH_KEY = "accel_rate"  # the DataLoader search's key (results/tables/searches.csv)
MAX_WORKERS = 4096  # the USL projection looks no further


def training_phases() -> list[Phase]:
    """The phases whose rows are a training job's input pipeline (they take ``batch_size``)."""
    return [ph for ph in PHASES.values() if any(p.name == TRAINING_KEY for p in ph.params)]


def _strategy(phase: Phase, trials: pd.DataFrame) -> list[str]:
    """The phase's strategy keys the records have (a record older than a key has none)."""
    return [p.name for p in phase.params if p.name not in phase.job_keys and p.name in trials]


def _cells(phase: Phase, trials: pd.DataFrame, tolerance: float):
    """(job values, variant's chosen cell key, its trials) per job and pipeline library, at
    the job's largest n: the library's fewest workers within ``tolerance`` of its best."""
    job_keys, strategy = list(phase.job_keys), _strategy(phase, trials)
    keys = ["variant", *strategy, "workers"]
    for job, jt in trials.groupby(["machine", "dataset", *job_keys], sort=True):
        jt = jt[jt["n_images"] == jt["n_images"].max()]
        for _, vt in jt.groupby("variant", sort=True):
            groups = list(vt.groupby(keys, sort=True))
            med = [float(pd.to_numeric(g["images_per_s"]).median()) for _, g in groups]
            cells = pd.DataFrame(
                {"median": med, "workers": [int(k[-1]) for k, _ in groups]}
            ).fillna({"median": -math.inf})
            pick = choose(cells, True, tolerance)[0]
            yield dict(zip(["machine", "dataset", *job_keys], job, strict=True)), groups[pick]


def _median(g: pd.DataFrame, column: str) -> float:
    if column not in g:
        return math.nan
    v = pd.to_numeric(g[column], errors="coerce").dropna()
    return float(v.median()) if len(v) else math.nan


def _storage(g: pd.DataFrame, storage: dict, devices: dict) -> dict:
    """Latency per request, images per request and bandwidth allowed, each with its origin."""
    name = str(g["storage"].iloc[0]) if "storage" in g else DEFAULT
    profile = storage.get(name)
    latency, latency_from = _median(g, "probe_latency_ms"), "probe (measured)"
    if not latency > 0:
        promised = get_kind(profile.kind).expected_latency_ms(profile) if profile else None
        latency, latency_from = (promised, "profile (configured)") if promised else (math.nan, "-")
    little, inflight = _median(g, "ceiling_little_images_per_s"), _median(g, "concurrency")
    # A request carries one image, or a shard's images: the probe's Little ceiling says how many
    per_request = little * latency / 1e3 / inflight if little > 0 and latency > 0 else 1.0
    allowed, allowed_from = _median(g, "probe_bandwidth_mb_per_s"), "probe (measured)"
    if not allowed > 0:
        cap = get_kind(profile.kind).bandwidth_cap_mb_per_s(profile) if profile else None
        allowed, allowed_from = (cap, "profile (configured)") if cap else (math.nan, "-")
    cold = "page_cache" in g and str(g["page_cache"].iloc[0]) == "cold"
    if not allowed > 0 and name == DEFAULT and cold:
        allowed = devices.get(str(g["dataset"].iloc[0]), math.nan)
        allowed_from = "device ceiling (measured)" if allowed > 0 else "-"
    return dict(
        latency_ms=float(latency),
        latency_from=latency_from,
        images_per_request=float(max(per_request, 1.0)),
        allowed_mb_per_s=float(allowed),
        allowed_from=allowed_from,
    )


def _measured(g: pd.DataFrame) -> dict:
    """What the cell's trials measured: rate, CPU per image, cores, requests in flight, bytes."""
    cpu = pd.to_numeric(g["own_cpu_seconds"], errors="coerce") if "own_cpu_seconds" in g else None
    images = pd.to_numeric(g["images"], errors="coerce").clip(lower=1)
    per_image = (cpu / images).dropna() if cpu is not None else pd.Series(dtype=float)
    return dict(
        measured_images_per_s=_median(g, "images_per_s"),
        repetitions=int(len(g)),
        measured_cpu_s_per_image=float(per_image.median()) if len(per_image) else math.nan,
        cores_here=_median(g, "logical_cores"),
        in_flight_here=_median(g, "concurrency"),
        mean_image_bytes=float((pd.to_numeric(g["bytes"]) / images).median()),
        steady_images_per_s=_median(g, "steady_images_per_s"),
    )


def usl_fit(scaling: pd.DataFrame | None, g: pd.DataFrame) -> tuple[dict | None, str]:
    """The USL fit of the cell's curve (its phase, variant, keys and n) and '' where it has
    data beyond one core; else (None, why there is no USL figure)."""
    if scaling is None or not len(scaling):
        return None, "none: no scaling fit"
    first = g.iloc[0]
    mask = pd.Series(True, index=scaling.index)
    for k in CURVE:
        if k in scaling and k in g:
            mask &= scaling[k].astype(str) == str(first[k])
    if not mask.any():
        return None, "none: no fit of this curve (it takes 3 or more worker counts of at least 1)"
    fit = scaling[mask].iloc[0].to_dict()
    if fit.get("status") != "ok":
        return None, f"none: {fit.get('status')}"
    if not _median(g, "logical_cores") > 1:
        return None, "none: the fit has no data beyond one core (a one-core machine)"
    return fit, ""


def usl_workers(fit: dict, workers: int, rate: float, target: float) -> tuple[float, str]:
    """The fewest workers whose USL-projected rate (the measured ``rate`` at ``workers``
    scaled by C(N) / C(workers)) reaches ``target``; (NaN, why) where the curve peaks below."""
    a, b = float(fit["a"]), float(fit["b"])
    n = np.arange(1, MAX_WORKERS + 1)
    projected = rate * usl(n, a, b) / float(usl(max(workers, 1), a, b))
    reached = np.flatnonzero(projected >= target)
    if len(reached):
        return float(n[reached[0]]), "USL fit of the workers curve"
    top = int(np.argmax(projected))
    return math.nan, (
        f"none: the USL fit reaches at most {projected[top]:.4g} images/s (at {n[top]} "
        "workers), below the accelerator's rate"
    )


def sustained(searches: pd.DataFrame | None, row: dict) -> tuple[float, str]:
    """(the highest simulated-accelerator rate a search kept >= 90 % busy for this row's
    phase, variant, dataset and storage, the search's name); (NaN, '') where none did."""
    if searches is None or not len(searches) or "key" not in searches:
        return math.nan, ""
    s = searches[(searches["key"] == SEARCH_KEY) & (searches["phase"] == row["phase"])]
    s = s[s["variant"] == row["variant"]]
    if "dataset" in s:  # empty: the first dataset, which every row of one dataset is
        s = s[s["dataset"].isin(["", str(row["dataset"])])]
    s = s[[_search_storage(r) == str(row["storage"]) for r in s.to_dict("records")]]
    best = pd.to_numeric(s.get("best", pd.Series(dtype=str)), errors="coerce")
    if not best.notna().any():
        return math.nan, ""
    i = best.idxmax()
    return float(best[i]), str(s.loc[i, "name"])


def _search_storage(search: dict) -> str:
    """A search's storage: its column, else ``storage=`` in its settings, else local."""
    if search.get("storage"):
        return str(search["storage"])
    for part in str(search.get("settings", "")).split(","):
        key, _, value = part.strip().partition("=")
        if key == "storage" and value:
            return value
    return DEFAULT


ACCELERATOR_COLUMNS = [
    "machine",
    "dataset",
    "phase",
    "job",
    "storage",
    "page_cache",
    "n_images",
    "variant",
    "workers",
    "settings",
    "accelerator",
    "accelerator_runs",
    "accelerator_images_per_s",
    "accelerator_source",
    "measured_images_per_s",
    "repetitions",
    "measured_share",
    "measured_cpu_s_per_image",
    "cores_here",
    "projected_cores_upper_bound",
    "projected_workers_usl",
    "usl_note",
    "latency_ms",
    "latency_from",
    "images_per_request",
    "in_flight_here",
    "projected_in_flight_little",
    "mean_image_bytes",
    "projected_mb_per_s",
    "allowed_mb_per_s",
    "allowed_from",
    "binds_first",
    "binds_first_factor",
    "measured_sustained_images_per_s",
    "sustained_share",
    "sustained_search",
    "steady_images_per_s",
    "steady_share",
]


def _label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if str(v) != NO_PARAM) or "-"


def _binds(cores: float, have_cores: float, inflight: float, have_inflight: float, mb, allowed):
    """(resource, need / have) of the resource furthest from what this machine ran with."""
    ratios = {
        "cores": cores / have_cores if have_cores > 0 else math.nan,
        "requests in flight": inflight / have_inflight if have_inflight > 0 else math.nan,
        "storage bandwidth": mb / allowed if allowed > 0 else math.nan,
    }
    known = {k: v for k, v in ratios.items() if v == v}
    if not known:
        return "-", math.nan
    name = max(known, key=known.get)
    return name, float(known[name])


def _project(base: dict, m: dict, acc: Accelerator, fit, note: str, searched) -> dict:
    """One row: the cell's measured columns ``m`` and ``base`` projected onto ``acc``."""
    rate = acc.images_per_s
    cores = rate * m["measured_cpu_s_per_image"]
    workers, usl_note = (
        (math.nan, note)
        if fit is None
        else usl_workers(fit, base["workers"], m["measured_images_per_s"], rate)
    )
    latency_s = m["latency_ms"] / 1e3
    inflight = rate * latency_s / m["images_per_request"] if latency_s > 0 else math.nan
    mb = rate * m["mean_image_bytes"] / 1e6
    binds, factor = _binds(
        cores, m["cores_here"], inflight, m["in_flight_here"], mb, m["allowed_mb_per_s"]
    )
    best, search = searched
    return dict(
        base,
        accelerator=acc.name,
        accelerator_runs=acc.runs,
        accelerator_images_per_s=rate,
        accelerator_source=acc.source,
        **m,
        measured_share=m["measured_images_per_s"] / rate,
        projected_cores_upper_bound=cores,
        projected_workers_usl=workers,
        usl_note=usl_note,
        projected_in_flight_little=inflight,
        projected_mb_per_s=mb,
        binds_first=binds,
        binds_first_factor=factor,
        measured_sustained_images_per_s=best,
        sustained_share=best / rate,
        sustained_search=search,
        steady_share=m["steady_images_per_s"] / rate,
    )


def project(
    trials: pd.DataFrame,
    accelerators: list[Accelerator],
    scaling: pd.DataFrame | None = None,
    storage: dict | None = None,
    devices: dict | None = None,
    searches: pd.DataFrame | None = None,
    tolerance: float = TOLERANCE,
) -> pd.DataFrame:
    """One row per training row (job x pipeline library, at the largest n) x accelerator
    profile (ACCELERATOR_COLUMNS; the module docstring says what each is). ``storage``: the
    config's profiles by name (imgread.storage.registry.parse_profiles), ``devices``: MB/s of
    each dataset's device ceiling, ``searches``: results/tables/searches.csv."""
    out = []
    for phase in training_phases():
        pt = trials[trials["phase"] == phase.name] if len(trials) else trials
        if not len(pt):
            continue
        for job, (key, g) in _cells(phase, pt, tolerance):
            strategy = dict(zip(_strategy(phase, pt), key[1:-1], strict=True))
            base = dict(
                machine=job["machine"],
                dataset=job["dataset"],
                phase=phase.name,
                job=_label({k: job[k] for k in phase.job_keys}),
                storage=str(job.get("storage", DEFAULT)),
                page_cache=str(job.get("page_cache", NO_PARAM)),
                n_images=int(g["n_images"].iloc[0]),
                variant=key[0],
                workers=int(key[-1]),
                settings=_label(strategy),
            )
            m = {**_measured(g), **_storage(g, storage or {}, devices or {})}
            fit, note = usl_fit(scaling, g)
            searched = sustained(searches, base)
            out += [_project(base, m, acc, fit, note, searched) for acc in accelerators]
    return pd.DataFrame(out, columns=ACCELERATOR_COLUMNS)
