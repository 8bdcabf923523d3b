"""Text a person reads, written from the results: Markdown tables, the sentences that say what
a study measured, and the recommendation's table and how to read it.

No statistics are imported here (no scipy): imgread.answer.study, which the workflow imports at
every parse, and imgread.answer.recommend both use this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imgread.answer import snippets

TOLERANCE = 0.05  # a cell whose median is within 5 % of the best one's is as good as the best
MIN_REPETITIONS = 3  # fewer repetitions than this get no interval: "too few repetitions"


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """Render a frame as a GitHub Markdown table (numbers right-aligned)."""

    def cell(v):
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    align = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns)
        + "|"
    )
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


# -- what a study measured (the study's dict: imgread.answer.study.describe)


def _sizes(study: dict, phase: str | None) -> str:
    sizes = (
        study["sizes"].get(phase, [])
        if phase
        else sorted({n for v in study["sizes"].values() for n in v})
    )
    return ", ".join(map(str, sizes)) or "none"


def dataset_line(study: dict) -> str:
    """'Dataset quick-1mb: 300 generated images, 2016 x 1512 px, 0.96 MB on average.' (one
    sentence per dataset where the study read several; the study's first)."""
    every = study.get("datasets") or [study["dataset"]]
    lines = []
    for i, d in enumerate(every):
        origin = "sampled from a folder" if d["kind"] == "sampled" else d["kind"]
        what = "Dataset" if len(every) == 1 else ("The study's dataset" if i == 0 else "Dataset")
        size = f"{d['width']} x {d['height']} px"
        if d.get("size_spread"):
            size = f"about {size} (each side within +-{d['size_spread']:.0%})"
        enc = f", {d['encoding']}" if d.get("encoding") else ""
        lines.append(
            f"{what} ``{d['name']}``: {d['count']} {origin} images, {size}{enc}, "
            f"{d['mean_mb']:.2f} MB on average."
        )
    return " ".join(lines)


def repetitions_line(study: dict) -> str:
    """'3 repetitions per cell' or '1-3 repetitions per cell'."""
    r = study["repetitions"]
    span = str(r["max"]) if r["min"] == r["max"] else f"{r['min']}-{r['max']}"
    return f"{span} repetitions per cell"


def machine_line(study: dict) -> str:
    """The machines the trials ran on, as a sentence."""
    ms = study["machines"]
    names = "; ".join(
        f"{m['cpu_model']} ({m['physical_cores']} physical / {m['logical_cores']} logical cores, "
        f"host {m['hostname']})"
        for m in ms
    )
    return f"Measured on {names}."


def footer(study: dict, phase: str | None = None) -> str:
    """The last line of every caption: what was measured, from the records."""
    return (
        f"{dataset_line(study)} Images per trial: {_sizes(study, phase)}; "
        f"{repetitions_line(study)}; {study['trials']} trials from {study['started'][:16]} to "
        f"{study['finished'][:16]} UTC. {machine_line(study)}"
    )


def device_line(study: dict) -> str:
    """The device ceiling, as measured, or why there is none."""
    d = study.get("device")
    if not d:
        return "The device ceiling was not measured."
    tool = d["fio_version"] if d["method"] == "fio" else "the in-package O_DIRECT reader"
    return (
        f"Device ceiling: {d['device_mb_per_s']:.0f} MB/s, the best cold sequential read of the "
        f"dataset's files with {d['best_jobs']} readers at once ({tool})."
    )


# -- the recommendation (imgread.answer.recommend.recommend's rows) as text

HOW_TO_READ = (
    "One row per job (what you need done) at the largest number of images measured, and a "
    "row for each smaller number where the answer differs. *use*: the strategy and workers to "
    "use, the fewest workers whose median is within {tol:.0%} of the best cell's; *rate*: its "
    "median over the repetitions and its 95 % interval, a t-interval on the log of the rate "
    "(rates are positive and vary by factors, so the bounds never go below zero), or *too few "
    "repetitions* with fewer than {min_reps}; *as good as best*: how many cells were within "
    "{tol:.0%} (1: a clear winner); *x default*: its speedup over the phase's default choice "
    "({default}); *x ImageFolder*: the DataLoader answer's speedup over the best setting "
    "of torchvision's ImageFolder in a DataLoader, seed 000's own code (- where it was not "
    "measured: it reads folders on this machine only); *of ceiling*: the fraction of what "
    "the hardware allows that it reaches "
    "(device: the disk's cold read bandwidth; cpu: one core's rate x the cores it can use; "
    "model: the consumer's own rate, i.e. the AU; storage: what the storage profile's probe "
    "before each trial allows, requests in flight / its latency and its bandwidth, where that "
    "is lower), above 100 % with the reason (the one-core rate it is measured against is "
    "itself a noisy median of a few repetitions; a throttle's first burst); *noise*: the "
    "coefficient of variation over repetitions and the repetitions another process or the "
    "hypervisor disturbed."
    " *memory*: the answer's median peak memory, the whole trial's (the process and all its "
    "workers, each page counted once); with a memory budget the rule is applied among the cells "
    "within it, and where that changed the answer, what the best overall would need."
)
HEADER = [
    "phase",
    "job",
    "images",
    "use",
    "settings",
    "rate (median, 95 % CI)",
    "as good as best",
    "x default",
    "x ImageFolder",
    "of ceiling",
    "noise",
    "memory",
]


def how_to_read(tolerance: float = TOLERANCE) -> str:
    """The paragraph under the table."""
    return HOW_TO_READ.format(
        tol=tolerance,
        default="sequential, or num_workers=1, with the default settings",
        min_reps=MIN_REPETITIONS,
    )


def _several_machines(rec: pd.DataFrame) -> bool:
    return rec["machine"].nunique() > 1


def _several_datasets(rec: pd.DataFrame) -> bool:
    return "dataset" in rec and rec["dataset"].nunique() > 1


def recommendation_header(rec: pd.DataFrame) -> list[str]:
    """The recommendation table's header (a machine column first where there are several,
    then a dataset column where there are several)."""
    return (
        (["machine"] if _several_machines(rec) else [])
        + (["dataset"] if _several_datasets(rec) else [])
        + HEADER
    )


def interval_text(r) -> str:
    """' [low, high]' after the rate, ' (too few repetitions)' with fewer than
    MIN_REPETITIONS, '' where there is no interval (a row of recommend())."""
    if getattr(r, "too_few_repetitions", r.repetitions < MIN_REPETITIONS):
        return " (too few repetitions)"
    return "" if np.isnan(r.ci_low) else f" [{r.ci_low:.4g}, {r.ci_high:.4g}]"


def ceiling_text(r) -> str:
    """'94% (cpu)'; above 100 %, why: '102% (cpu; one-core rate is a noisy median of 2
    repetitions)' (the ceiling is measured, not known: the fraction is kept as measured)."""
    frac = r.ceiling_fraction
    if np.isnan(frac):
        return "-"
    if round(frac, 2) <= 1:
        return f"{frac:.0%} ({r.ceiling_kind})"
    reps = getattr(r, "ceiling_one_core_repetitions", 0)
    if r.ceiling_kind == "cpu":
        of = f" of {reps} repetition{'s' if reps != 1 else ''}" if reps > 0 else ""
        why = f"one-core rate is a noisy median{of}"
    elif r.ceiling_kind == "storage":
        # The probe's ceiling is sustained over a second; a throttle (tbf, blkio) admits a
        # burst first, which a trial shorter than that rides.
        why = "a trial this short rides the throttle's first burst; the probe's is sustained"
    else:
        why = "the ceiling is itself a noisy median"
    return f"{frac:.0%} ({r.ceiling_kind}; {why})"


def retries_text(r) -> str:
    """', 12 reads retried' where the answer's trials retried reads (a failing server: the
    rate includes the retries and their backoff), '' otherwise."""
    n = getattr(r, "retries", 0) or 0
    return f", {n} read{'s' if n != 1 else ''} retried" if n else ""


def bytes_text(v: float) -> str:
    """'3.1 GB', '420 MB' (decimal units, as the budget is written)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} B"


def memory_text(r) -> str:
    """The answer's median peak memory (a row of recommend()), and what a memory budget did:
    '1.2 GB, within the 2 GB budget; the best overall (processes x8, ...) needs 3.1 GB'."""
    mem = getattr(r, "memory_bytes", float("nan"))
    if mem is None or np.isnan(mem):
        return "-"
    budget = getattr(r, "memory_budget_bytes", float("nan"))
    if budget is None or np.isnan(budget):
        return bytes_text(mem)
    if mem > budget:
        return f"{bytes_text(mem)}, over the {bytes_text(budget)} budget: no cell fits it"
    if not r.budget_changed_answer:
        return f"{bytes_text(mem)}, within the {bytes_text(budget)} budget"
    return (
        f"{bytes_text(mem)}, within the {bytes_text(budget)} budget; the best overall "
        f"({r.without_budget}) needs {bytes_text(r.without_budget_memory_bytes)}"
    )


def recommendation_rows(rec: pd.DataFrame) -> list[list[str]]:
    """The recommendation table's rows, as the text of each cell."""
    out = []
    for r in rec.itertuples(index=False):
        n = f"{r.n_images}" + (f" (also {r.also_for_n})" if r.also_for_n != "-" else "")
        cv = "-" if np.isnan(r.cv) else f"CV {r.cv:.0%}"
        speed = "-" if np.isnan(r.speedup_over_default) else f"{r.speedup_over_default:.2f}"
        folder = getattr(r, "x_imagefolder", float("nan"))
        out.append(
            [
                *([r.machine] if _several_machines(rec) else []),
                *([r.dataset] if _several_datasets(rec) else []),
                r.phase,
                r.job,
                n,
                f"{r.variant} x{r.workers}",
                r.settings,
                f"{r.median:.4g} {r.unit}{interval_text(r)}",
                str(r.as_good_as_best),
                speed,
                "-" if np.isnan(folder) else f"{folder:.2f}",
                ceiling_text(r),
                f"{cv}, {r.interfered_trials}/{r.repetitions} disturbed{retries_text(r)}",
                memory_text(r),
            ]
        )
    return out


def markdown(
    rec: pd.DataFrame,
    study: dict | None = None,
    tolerance: float = TOLERANCE,
    opening: list[str] | None = None,
    appendix: str = "",
) -> str:
    """The recommendation as a Markdown page a person reads first: it opens with the
    ``opening`` sentences (imgread.answer.first_screen), ``appendix`` after how to read it."""
    lines = ["# What to use on this machine", ""]
    for sentence in opening or []:
        lines += [sentence, ""]
    if study:
        lines += [machine_line(study) + " " + dataset_line(study).replace("``", "`"), ""]
    header = recommendation_header(rec)
    align = {
        "images": "---:",
        "as good as best": "---:",
        "x default": "---:",
        "x ImageFolder": "---:",
        "of ceiling": "---:",
    }
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align.get(h, ":---") for h in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in recommendation_rows(rec)]
    lines += [f"\n{line}" for line in not_measured(study)]
    tail = f"\n{appendix}" if appendix else ""
    return (
        "\n".join(lines) + "\n\n" + how_to_read(tolerance) + "\n" + tail
        + snippets.markdown_blocks(rec, (study or {}).get("storage_kinds"))
    )  # fmt: skip


def not_measured(study: dict | None) -> list[str]:
    """A line per storage profile the config asked for and this machine could not emulate
    (imgread.plan.storage.skipped_storage), for the answer and the report."""
    return [f"Not measured here: {line}." for line in (study or {}).get("storage_skipped", [])]


def rst(rec: pd.DataFrame) -> str:
    """The recommendation as a reStructuredText list-table (for the HTML report)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [recommendation_header(rec), *recommendation_rows(rec)]:
        cells = [c.replace("*", "\\*").replace("|", "/") for c in row]
        # a cell of only "-" would start a nested bullet list: escape it
        cells = ["\\-" if c == "-" else c for c in cells]
        lines.append("   * - " + cells[0])
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines) + "\n"
