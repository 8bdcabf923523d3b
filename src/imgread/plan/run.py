"""What a run says around its jobs: at its start (the converted config, the profiles and
cells left out), at its end (the answer, or the logs of the jobs that failed), and the guard
that refuses a report of tables another config made.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from imgread.answer.study import config_digest
from imgread.plan.grid import skipped_cells
from imgread.plan.storage import skipped_storage
from imgread.storage import registry as storage

FAILED_WORDS = ("Error", "Traceback")
LAST_LOGS = 3  # the failed jobs' logs shown (the newest)
TAIL_LINES = 12


def start_lines(config: dict, converted: str | None) -> list[str]:
    """The lines a run starts with: the old config form read, every storage profile this
    machine cannot emulate (asks each kind: at a run's start only), the undecodable cells."""
    return [
        *([converted] if converted else []),
        *skipped_storage(config).values(),
        *skipped_cells(config),
    ]


CODE_HEADING = "## Code to paste"  # imgread.answer.snippets.markdown_blocks


def recommendation(path: str | Path = "results/tables/recommendation.md") -> str | None:
    """The answer to print at a run's end, from the table the run wrote (None: not there)."""
    path = Path(path)
    if not path.exists():
        return None
    # the code to paste (a block per row, hundreds of lines) stays in the file: the console's
    # last lines are the answer's opening sentences and its table
    text, code, _ = path.read_text().partition(CODE_HEADING)
    more = f"\nCode to paste for each row: the section '{CODE_HEADING.strip('# ')}' of {path}.\n"
    return f"\nWhat to use on this machine ({path}):\n\n{text.rstrip()}\n" + (more if code else "")


def failed_logs(logs: str | Path, since: float) -> list[Path]:
    """The job logs under ``logs`` written since ``since`` (a run's start) that hold an
    error, oldest first."""
    found = sorted(Path(logs).rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return [
        log
        for log in found
        if log.stat().st_mtime >= since
        and any(word in log.read_text(errors="replace") for word in FAILED_WORDS)
    ]


def failure_report(logs: str | Path, since: float) -> list[str]:
    """What a failed run says: the quiet profile hides Snakemake's "Error in rule" blocks, so
    name the newest failed jobs' logs with their last lines (or where to look)."""
    failed = failed_logs(logs, since)
    out = []
    for log in failed[-LAST_LOGS:]:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        out.append(f"\nimgread: a job failed; its log {log} ends with:\n{tail}")
    return out or ["imgread: the run failed; see the log above and results/logs/"]


def report_mismatch(config: dict, study: str | Path, dataset: str, planned: int) -> str | None:
    """Why a report must not be built from the tables (``study``: their study.json), or None:
    they were made with another config than this one (the report would show one study under
    another's settings). `make report` passes the config the last `make quick`/`reproduce`/
    `smoke` used."""
    study = Path(study)
    if not study.exists():
        return None
    made = json.loads(study.read_text())
    if made.get("config_digest") == config_digest(config):
        return None
    d = made["dataset"]
    return (
        f"imgread: results/tables/ were made with another config (dataset {d['name']}, "
        f"{made['trials']} trials) than this one (dataset {dataset}, {planned} trials "
        f"planned); build the report with the config the tables were made with (make "
        f"report uses the one make last ran), or run this config's study first"
    )


def cluster_problem(partitions: set[str]) -> str | None:
    """On SLURM, why the run cannot submit (sbatch missing, a partition it would submit to
    not on this cluster), or None. SLURM itself would only fail job by job. Runs sinfo:
    call it at a run's start (onstart), never while parsing."""
    if shutil.which("sbatch") is None:
        return (
            "imgread: sbatch is not on PATH: this run uses the SLURM executor "
            "(profiles/slurm); run it on a SLURM login node, or run locally without the profile"
        )
    listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
    exists = set(listed.stdout.split())
    missing = sorted(p for p in partitions if p not in exists)
    if listed.returncode != 0 or not missing:
        return None
    return (
        f"imgread: SLURM partition(s) {', '.join(missing)} do not exist on this cluster "
        f"(sinfo lists {', '.join(sorted(exists)) or 'none'}); fix cluster.partitions in "
        f"the config or slurm_partition in profiles/slurm"
    )


def storage_lifecycle(config: dict, converted: str | None, when: str) -> None:
    """Remove what killed earlier runs left of the storage emulation (namespaces, nginx,
    cgroups; a trial cleans up after itself on every other way out), and at the start say in
    one line each which storage profiles this machine cannot measure. Runs commands: call it
    from onstart/onsuccess/onerror only, never while parsing."""
    for line in storage.sweep():
        print(f"imgread: removed a leftover of an earlier run: {line}", file=sys.stderr)
    if when == "start":
        for line in start_lines(config, converted):
            print(f"imgread: {line}", file=sys.stderr)


def print_recommendation() -> None:
    """At the end of a run: the answer, from the table the run wrote (if it got that far)."""
    text = recommendation()
    if text:
        print(text)


def print_failures(since: float) -> None:
    """When a run fails: the failed jobs' logs and their last lines (:func:`failure_report`)."""
    for line in failure_report("results/logs", since):
        print(line, file=sys.stderr)
