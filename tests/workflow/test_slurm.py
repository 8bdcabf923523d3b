"""The workflow on a real SLURM cluster (slurm-wlm and munge on localhost, started by the test):
`make test-slurm`, as root. Trials run in job groups on an exclusive node, on each of two
partitions (one node in both), and the tables have the shape a local run gives."""

from __future__ import annotations

import itertools
import math
import re
import shutil
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from imgread.answer.analysis import SPEEDUP_COLUMNS, SUMMARY_COLUMNS
from imgread.phases.registry import PHASES
from imgread.plan.grid import trial_grid

from ..support.helpers import ROOT, copy_project, path_without, snakemake
from ..support.slurm_cluster import PARTITIONS, job_times, local_cluster, missing_commands

pytestmark = pytest.mark.slurm

# What a cluster without accounting (no slurmdbd) needs, and status checks every second so
# the smoke run is not all waiting: set by the test, not by editing the profile.
LOCAL_CLUSTER_ARGS = (
    "--slurm-no-account",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--default-resources",
    f"slurm_partition={PARTITIONS[0]}",
    "runtime=30",
    "mem_mb=1000",
    "cpus_per_task=1",
)
# Two machine types (one node in two partitions) on a small grid: every cell on each.
MACHINES = {
    "cluster": {"partitions": list(PARTITIONS)},
    "sizes": [4],
    "repetitions": 1,
    "phases": {
        "load": {"sequential": {"workers": [1]}, "threads": {"workers": [1, 2]}},
        "decode": {"sequential": {"workers": [1]}, "processes": {"workers": [2]}},
        "dataloader": {"torch": {"workers": []}},
        "stream": {
            v: {"workers": []}
            for v in ("sequential", "processes", "threads", "thread-per-frame", "asyncio")
        },
    },
}


def _config(work: Path, override: dict | None) -> tuple[str, ...]:
    if override is None:
        return ("--configfile", "config/smoke.yaml")
    (work / "override.yaml").write_text(yaml.safe_dump(override))
    return ("--configfile", "config/smoke.yaml", "override.yaml")


def _grid(override: dict | None):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config/smoke.yaml").read_text()))
    update_config(config, override or {})
    return trial_grid(config)


def _project(tmp_path_factory, name: str, datasets_from: Path | None = None) -> Path:
    """A copy of the project; with the datasets (images, checksums, caches, ceiling) of an
    earlier run, so only the trials run again."""
    work = copy_project(tmp_path_factory.mktemp(name) / "imgread")
    if datasets_from is not None:
        shutil.copytree(
            datasets_from / "results/datasets", work / "results/datasets", symlinks=True
        )
    return work


def _on_slurm(cluster, work: Path, override: dict | None):
    t0 = time.monotonic()
    proc = snakemake(
        work,
        "--workflow-profile",
        "profiles/slurm",
        *_config(work, override),
        *LOCAL_CLUSTER_ARGS,
        env=cluster,
        timeout=1200,
    )
    return work, time.monotonic() - t0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_commands()
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `make test-slurm` (as root)")
    with local_cluster(tmp_path_factory.mktemp("slurm-cluster")) as env:
        yield env


@pytest.fixture(scope="module")
def smoke(cluster, tmp_path_factory):
    """config/smoke.yaml through profiles/slurm: (project, wall seconds, output)."""
    return _on_slurm(cluster, _project(tmp_path_factory, "smoke"), None)


@pytest.fixture(scope="module")
def machines(cluster, smoke, tmp_path_factory):
    """The small grid on both partitions through profiles/slurm, and the same run locally
    (both on the smoke run's dataset)."""
    local = _project(tmp_path_factory, "machines-local", datasets_from=smoke[0])
    snakemake(local, "--cores", "2", *_config(local, MACHINES), timeout=900)
    remote = _project(tmp_path_factory, "machines", datasets_from=smoke[0])
    _on_slurm(cluster, remote, MACHINES)
    return local, remote


def _table(project: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(project / "results/tables" / name)


def test_the_smoke_tables_have_a_local_runs_shape(smoke):
    work, _, _ = smoke
    grid = _grid(None)
    trials, summary = _table(work, "trials.csv"), _table(work, "summary.csv")
    assert len(trials) == len(grid)
    assert len(summary) == len({replace(c, repetition=0) for c in grid})
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(_table(work, "speedup.csv").columns) == SPEEDUP_COLUMNS
    assert set(_table(work, "recommendation.csv")["phase"]) == set(PHASES)


def test_the_tables_have_the_shape_of_a_local_run_on_both_machines(machines):
    local, remote = machines
    for name in ("trials.csv", "summary.csv", "speedup.csv", "scaling.csv", "recommendation.csv"):
        a, b = _table(local, name), _table(remote, name)
        assert list(a.columns) == list(b.columns), name
        if name != "recommendation.csv":  # its rows per n depend on the answers measured
            assert len(a) == len(b), name
    keys = ["machine", "phase", "variant", "n_images", "workers", "repetition"]
    a, b = _table(local, "trials.csv"), _table(remote, "trials.csv")
    assert sorted(map(tuple, a[keys].astype(str).values)) == sorted(
        map(tuple, b[keys].astype(str).values)
    )
    assert len(b) == len(_grid(MACHINES))


def test_every_cell_ran_on_each_partition_and_the_record_says_where(machines):
    _, remote = machines
    trials = _table(remote, "trials.csv")
    assert set(trials["machine"]) == set(PARTITIONS)
    assert (trials["slurm_partition"] == trials["machine"]).all()
    assert trials["slurm_job_id"].notna().all() and trials["hostname"].notna().all()
    assert (trials["placement"] == "in place").all()
    assert trials.groupby("machine").size().nunique() == 1  # the same cells on both
    rec = _table(remote, "recommendation.csv")
    assert set(rec["machine"]) == set(PARTITIONS)
    assert (remote / "results/figures/decode_speedup.png").exists()


def test_trials_ran_in_groups_and_never_two_at_once_on_the_node(smoke, machines):
    for trials in (_table(smoke[0], "trials.csv"), _table(machines[1], "trials.csv")):
        jobs = trials.groupby("slurm_job_id").size()
        # one SLURM job per group (per machine, cold or warm, in fifties), not per trial
        assert len(trials) / len(jobs) >= 5, f"{len(jobs)} SLURM jobs for {len(trials)} trials"
        for _, on_node in trials.groupby("hostname"):
            spans = sorted(
                (datetime.fromisoformat(a), datetime.fromisoformat(b))
                for a, b in zip(on_node.started_at, on_node.finished_at, strict=True)
            )
            for (s1, e1), (s2, e2) in itertools.pairwise(spans):
                assert e1 <= s2, f"trials overlap on a node: [{s1}, {e1}] and [{s2}, {e2}]"


def test_scheduling_overhead_is_at_most_a_tenth_of_the_trials_time(smoke, cluster):
    """Scheduling: the time between the first SLURM job's submission and the last one's end
    in which no job of ours ran (queueing, start-up, status polling), against the trials'
    time in their allocations. Printed beside it: what Snakemake's start of each job inside
    an allocation costs, and the whole run against the same run locally."""
    remote, slurm_wall, _ = smoke
    trials = _table(remote, "trials.csv")
    jobs = job_times(cluster, trials["slurm_job_id"].astype(int).astype(str))
    # the smoke run's other SLURM jobs (its prepare group): the ids between its first and last
    every = job_times(cluster, range(min(map(int, jobs)) - 1, max(map(int, jobs)) + 1))
    busy = [(t["StartTime"], t["EndTime"]) for t in every.values()]
    first_submit = min(t["SubmitTime"] for t in every.values())
    span = (max(e for _, e in busy) - first_submit).total_seconds()
    scheduling = span - _union_seconds(busy)
    allocations = sum((t["EndTime"] - t["StartTime"]).total_seconds() for t in jobs.values())
    own = (
        (pd.to_datetime(trials["finished_at"]) - pd.to_datetime(trials["job_started_at"]))
        .dt.total_seconds()
        .sum()
    )
    print(
        f"\nSLURM smoke run: {len(trials)} trials in "
        f"{len(jobs)} group jobs, {len(every)} SLURM jobs in all; scheduling {scheduling:.0f} s"
        f" = {scheduling / allocations:.1%} of the trials' {allocations:.0f} s in their "
        f"allocations; inside them Snakemake starts each job (srun + snakemake) at "
        f"{(allocations - own) / len(trials):.1f} s a trial (the trials' own processes: "
        f"{own:.0f} s); whole run {slurm_wall:.0f} s"
    )
    assert scheduling <= 0.10 * allocations


def _union_seconds(spans) -> float:
    """Seconds covered by at least one of the (start, end) spans."""
    total, end = 0.0, None
    for s, e in sorted(spans):
        if end is None or s > end:
            total += (e - s).total_seconds()
            end = e
        elif e > end:
            total += (e - end).total_seconds()
            end = e
    return total


def test_a_partition_that_does_not_exist_stops_the_run_before_any_trial(cluster, tmp_path):
    work = copy_project(tmp_path / "imgread")
    (work / "bad.yaml").write_text(yaml.safe_dump({"cluster": {"partitions": ["nosuch"]}}))
    proc = snakemake(
        work,
        "--workflow-profile",
        "profiles/slurm",
        "--configfile",
        "config/smoke.yaml",
        "bad.yaml",
        *LOCAL_CLUSTER_ARGS,
        env=cluster,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "SLURM partition(s) nosuch do not exist on this cluster" in out, out[-3000:]
    assert not list((work / "results").rglob("*.json"))


def test_without_sbatch_the_run_stops_with_one_line(tmp_path):
    work = copy_project(tmp_path / "imgread")
    bin_dir = path_without(tmp_path, "sbatch")
    proc = snakemake(
        work,
        "--workflow-profile",
        "profiles/slurm",
        "--configfile",
        "config/smoke.yaml",
        "--slurm-no-account",
        env={"PATH": bin_dir},
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "sbatch" in out, out[-3000:]
    assert not list((work / "results").rglob("*.json"))


def test_a_dry_run_of_the_full_study_plans_few_slurm_jobs(tmp_path):
    work = copy_project(tmp_path / "imgread")
    proc = snakemake(work, "-n", "--workflow-profile", "profiles/slurm", "--slurm-no-account")
    out = proc.stdout + proc.stderr
    groups = re.findall(r"Group job (\S+) \(jobs", out)
    counts = {g: groups.count(g) for g in set(groups)}
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    grid = trial_grid(config)
    print(f"\nfull study on SLURM: {len(groups)} group jobs {counts} for {len(grid)} trials")
    cold = sum(
        PHASES[c.phase].page_cache(PHASES[c.phase].resolve(dict(c.params))) == "cold" for c in grid
    )
    # in fifties, the trials that read the dataset cold apart from the others
    assert counts == {
        "prepare": 1,
        "trials-cold": math.ceil(cold / 50),
        "trials-warm": math.ceil((len(grid) - cold) / 50),
    }
