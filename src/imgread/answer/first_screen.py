"""What a person reads before the table: two or three sentences from the run's own numbers
(the training answer per storage in accelerators, and streaming), and the accelerators table
as text (imgread.answer.accelerators' rows), for recommendation.md, the report's first page
and the console's last lines. Nothing here is typed in: every figure comes from a record.
"""

from __future__ import annotations

import math

import pandas as pd

from imgread.answer.text import markdown_table
from imgread.phases.registry import PHASES
from imgread.storage.registry import DEFAULT

MAX_TRAINING = 2  # training sentences (one per storage profile): the rest is in the table
CACHE_ORDER = ("cold", "limited", "warm")  # read from the storage first: the honest case
FPS = 30  # the frame rate a stream rate is counted in streams of, on paper
STREAM_KEY = "fps"  # a phase taking it streams frames to a model
STREAMS_SEARCH = "streams"  # the stream search's key (results/tables/searches.csv)
ALWAYS_SAID = ("decoder", "source")


def _pct(x: float) -> str:
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def _short(phase: str, settings: str) -> str:
    """The settings worth saying in a sentence: the decoder, the source and what differs from
    the phase's defaults."""
    defaults = {p.name: p.default for p in PHASES[phase].params} if phase in PHASES else {}
    said = []
    for part in settings.split(", "):
        k, _, v = part.partition("=")
        if v and (k in ALWAYS_SAID or defaults.get(k, v) != v):
            said.append(part)
    return ", ".join(said)


def answer_rows(rec: pd.DataFrame | None, acc: pd.DataFrame | None) -> pd.DataFrame:
    """The accelerators rows of the answer's own choice (the recommendation's row of each
    training job; its library, at the library's own fewest workers), for the first
    accelerator profile."""
    if acc is None or not len(acc) or rec is None or not len(rec):
        return pd.DataFrame(columns=getattr(acc, "columns", []))
    keys = ["phase", "machine", "dataset", "job", "n_images", "variant"]
    picked = {tuple(map(str, k)) for k in rec[keys].itertuples(index=False)}
    first = acc[acc["accelerator"] == acc["accelerator"].iloc[0]]
    mask = [tuple(map(str, k)) in picked for k in first[keys].itertuples(index=False)]
    return first[mask]


def _training(r) -> str:
    """One training sentence from an accelerators row."""
    rest = ", ".join(p for p in r.job.split(", ") if not p.startswith(("storage=", "page_cache=")))
    cache = f"{r.page_cache} page cache" + (f", {rest}" if rest else "")
    use = f"{r.variant} x{r.workers}"
    short = _short(r.phase, r.settings)
    need = f"about {math.ceil(r.projected_cores_upper_bound)} cores like these (projected: "
    need += "per-core rate x cores, an upper bound on the rate"
    if r.projected_workers_usl == r.projected_workers_usl:
        need += f"; {r.projected_workers_usl:.0f} workers by the USL fit"
    need += ")"
    if r.projected_in_flight_little == r.projected_in_flight_little:
        need += (
            f" and {math.ceil(r.projected_in_flight_little)} requests in flight (Little's law, "
            f"{r.latency_ms:.3g} ms a request)"
        )
    fed = f"this machine feeds {_pct(r.measured_share)} of one (measured, "
    fed += f"{r.measured_images_per_s:.4g} images/s)"
    if r.measured_sustained_images_per_s == r.measured_sustained_images_per_s:
        fed += (
            f"; a simulated accelerator at {r.measured_sustained_images_per_s:.4g} images/s "
            f"({_pct(r.sustained_share)} of one) was kept >= 90 % busy (measured by the "
            f"search {r.sustained_search}, at its own cell: results/tables/searches.csv)"
        )
    if r.steady_images_per_s == r.steady_images_per_s:
        fed += f"; {r.steady_images_per_s:.4g} images/s steady with a limited page cache"
    binds = ""
    if r.projected_mb_per_s > r.allowed_mb_per_s:  # no client-side change fixes this one
        binds += (
            f"; the storage allows {r.allowed_mb_per_s:.4g} of the {r.projected_mb_per_s:.4g} "
            "MB/s one needs"
        )
    if r.binds_first != "-":
        binds += f"; first to bind: {r.binds_first} (x{r.binds_first_factor:.3g} what it ran with)"
    return (
        f"Training from {r.storage} ({cache}): use {use}"
        + (f" ({short})" if short else "")
        + f"; one {r.accelerator} of {r.accelerator_runs} ({r.accelerator_images_per_s:.0f} "
        f"images/s) would need {need}; {fed}{binds}."
    )


def _per_storage(rows: pd.DataFrame) -> list:
    """One answer row per storage profile (the remote ones first, in the table's order): the
    job read from the storage (cold, then limited, then warm page cache)."""
    if not len(rows):
        return []
    rank = {c: i for i, c in enumerate(CACHE_ORDER)}
    rows = rows.assign(_rank=[rank.get(c, len(rank)) for c in rows["page_cache"]])
    rows = rows.assign(_local=rows["storage"] == DEFAULT)
    rows = rows.sort_values(["_local", "_rank"], kind="stable")
    return list(rows.drop_duplicates("storage").itertuples(index=False))


def _streaming(rec: pd.DataFrame | None, searches: pd.DataFrame | None) -> list[str]:
    """One streaming sentence: the most streams a search sustained, else the best stream rate
    measured, counted in streams of 30 fps on paper; none where nothing streamed."""
    names = [ph.name for ph in PHASES.values() if any(p.name == STREAM_KEY for p in ph.params)]
    if searches is not None and len(searches) and "key" in searches:
        s = searches[(searches["key"] == STREAMS_SEARCH) & searches["phase"].isin(names)]
        best = pd.to_numeric(s["best"], errors="coerce")
        if best.notna().any():
            r = s.loc[best.idxmax()]
            where = f" from {r['storage']}" if r.get("storage") else ""
            return [
                f"Streaming{where}: {r['variant']} x{r['workers']} ({r['settings']}) sustains "
                f"{best.max():.0f} concurrent streams with the p99 latency within the deadline "
                "and under 1 % late frames (measured, a bounded search)."
            ]
    if rec is None or not len(rec):
        return []
    s = rec[rec["phase"].isin(names) & (rec["unit"] == "frames/s")]
    if not len(s):
        return []
    r = s.loc[pd.to_numeric(s["median"]).idxmax()]
    return [
        f"Streaming ({r['job']}): use {r['variant']} x{r['workers']}"
        f" ({_short(r['phase'], r['settings'])}): {r['median']:.4g} frames/s (measured), "
        f"at most {r['median'] / FPS:.1f} streams of {FPS} fps (projected: rate / {FPS}, an "
        "upper bound)."
    ]


def sentences(
    rec: pd.DataFrame | None, acc: pd.DataFrame | None, searches: pd.DataFrame | None = None
) -> list[str]:
    """The two or three sentences the answer opens with: training per storage profile (at
    most MAX_TRAINING, the others in the table), and streaming where stream rows exist."""
    rows = _per_storage(answer_rows(rec, acc))
    out = [_training(r) for r in rows[:MAX_TRAINING]]
    if len(rows) > MAX_TRAINING:
        out.append(
            f"{len(rows) - MAX_TRAINING} more storage profile(s): the accelerators table below."
        )
    return out + _streaming(rec, searches)


ACCELERATOR_HEADER = [
    "job",
    "use",
    "accelerator",
    "feeds (measured)",
    "cores needed (projected: upper bound; USL)",
    "requests in flight (projected: Little)",
    "MB/s needed (projected) / allowed",
    "binds first",
    "sustained >= 90 % busy (measured)",
    "limited page cache, steady (measured)",
]


def _or(v: float, text: str) -> str:
    return "-" if v != v else text


def accelerator_rows(acc: pd.DataFrame) -> list[list[str]]:
    """The accelerators table's rows, as the text of each cell."""
    out = []
    for r in acc.itertuples(index=False):
        usl = _or(r.projected_workers_usl, f"; USL {r.projected_workers_usl:.0f} workers")
        allowed = _or(r.allowed_mb_per_s, f"{r.allowed_mb_per_s:.4g} ({r.allowed_from})")
        out.append(
            [
                f"{r.job}",
                f"{r.variant} x{r.workers}",
                f"{r.accelerator} ({r.accelerator_images_per_s:.0f} images/s)",
                f"{_pct(r.measured_share)} ({r.measured_images_per_s:.4g} images/s)",
                _or(r.projected_cores_upper_bound, f"{r.projected_cores_upper_bound:.1f}")
                + (usl if usl != "-" else f"; USL {r.usl_note}"),
                _or(r.projected_in_flight_little, f"{r.projected_in_flight_little:.1f}"),
                f"{r.projected_mb_per_s:.4g} / {allowed}",
                f"{r.binds_first}" + _or(r.binds_first_factor, f" (x{r.binds_first_factor:.3g})"),
                _or(
                    r.measured_sustained_images_per_s,
                    f"{r.measured_sustained_images_per_s:.4g} images/s, "
                    f"{_pct(r.sustained_share)} of one",
                ),
                _or(r.steady_images_per_s, f"{r.steady_images_per_s:.4g} images/s"),
            ]
        )
    return out


ACCELERATOR_NOTE = (
    "Each training row (every pipeline library at its fewest workers within the tolerance of "
    "its best, every storage profile and page-cache state) against each accelerator profile "
    "(the config's accelerators list, docs/accelerators.md). *feeds*: its median rate over the "
    "accelerator's, measured. Projected on paper from the measured rates: *cores needed*, the "
    "accelerator's rate x the CPU seconds per image of the trial's processes (per-core rate x "
    "cores is an upper bound on the rate, so these are the fewest cores), and the workers the "
    "USL fit of its curve needs where the fit has data beyond one core; *requests in flight*, "
    "Little's law: rate x latency per request; *MB/s needed*: rate x mean bytes per image, "
    "against what the storage allows; *binds first*: the resource furthest (x need / have) "
    "from what this machine ran with."
)


def accelerators_markdown(acc: pd.DataFrame | None) -> str:
    """The accelerators section of recommendation.md ('' where there is no training row)."""
    if acc is None or not len(acc):
        return ""
    table = pd.DataFrame(accelerator_rows(acc), columns=ACCELERATOR_HEADER)
    return f"## Accelerators\n\n{markdown_table(table)}\n{ACCELERATOR_NOTE}\n"


def accelerators_rst(acc: pd.DataFrame | None) -> str:
    """The accelerators table as a reStructuredText list-table, with its note."""
    if acc is None or not len(acc):
        return ""
    lines = [
        "**Accelerators.** " + ACCELERATOR_NOTE,
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
    ]
    for row in [ACCELERATOR_HEADER, *accelerator_rows(acc)]:
        cells = ["\\-" if c == "-" else c.replace("*", "\\*").replace("|", "/") for c in row]
        lines.append("   * - " + cells[0])
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines) + "\n"
