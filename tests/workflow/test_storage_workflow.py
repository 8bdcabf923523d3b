"""The smoke study with a volume and an http profile (config/smoke-storage.yaml), end to end
through the real workflow: every load reader, the DataLoader and the stream producers read
through the storage; the records carry the probe, the emulation's settings and the server's
CPU; the answer has a row per profile; nothing of the emulation is left. Then the same study
where nginx is missing (IMGREAD_NGINX names a server that is not there): the http profile is
left out, and the run, the answer and the report say so in one line."""

from __future__ import annotations

import pandas as pd
import pytest

from imgread.storage import registry

from ..support.helpers import copy_project, emulation_of, snakemake

pytestmark = pytest.mark.workflow
STUDY = ["--configfile", "config/smoke.yaml", "config/smoke-storage.yaml"]
FIGURES = ("load_in_flight", "storage_dataloader", "storage_stream")


def _needs(*kinds: str) -> None:
    for name in kinds:
        why = registry.KINDS[name].missing()
        if why:
            pytest.skip(f"{name}: {why}")


def _emulation_left() -> set[str]:
    """Every namespace, veth link, cgroup and nginx process of the storage emulation on this
    machine now, each as '<what> <name>'."""
    return {f"{what} {x}" for what, found in emulation_of().items() for x in found}


@pytest.fixture(scope="module")
def storage_run(tmp_path_factory):
    _needs("volume", "http")
    work = copy_project(tmp_path_factory.mktemp("storage") / "imgread")
    before = _emulation_left()
    # the tables and the figures the tests read (the others would only be drawn)
    targets = ["results/tables/recommendation.csv", "results/tables/recommendation.md"]
    targets += [f"results/figures/{n}.png" for n in FIGURES]
    proc = snakemake(work, *targets, "--cores", "2", *STUDY)
    return work, proc, before


def test_every_reader_reads_through_each_profile_and_records_it(storage_run):
    work, _, _ = storage_run
    trials = pd.read_csv(work / "results/tables/trials.csv")
    load = trials[trials["phase"] == "load"]
    assert set(load["storage"]) == {"local", "smoke-volume", "smoke-http", "smoke-failing"}
    http = trials[trials["storage"] == "smoke-http"]
    assert set(http["phase"]) == {"load", "dataloader", "stream"}
    assert set(http[http["phase"] == "load"]["variant"]) == {
        "sequential",
        "threads",
        "asyncio",
        "processes",
    }
    assert (http["storage_kind"] == "http").all()
    assert http["storage_server"].str.startswith("nginx/").all()
    assert http["storage_qdisc"].str.contains("tbf").all()
    # the probe held the profile: 10 ms within max(25 %, 2 ms), bandwidth at most the cap
    assert http["probe_latency_ms"].between(7.5, 12.5).all()
    assert http["probe_attempts"].between(1, registry.PROBE_ATTEMPTS).all()
    assert (http["probe_bandwidth_mb_per_s"] <= 125 * 1.10).all()
    # the server's work, in its own column (in clock ticks of 10 ms: a short trial may show 0)
    assert (http["server_cpu_seconds"] >= 0).all() and http["server_cpu_seconds"].sum() > 0
    # every cold trial proven cold, the server's side included (the same page cache)
    cold = trials[trials["cache_state"] == "cold"]
    assert (cold["resident_fraction_before"] <= 0.01).all()
    volume = trials[trials["storage"] == "smoke-volume"]
    assert (volume["storage_cgroup"].str.contains("blkio|io.max")).all()
    assert (volume["probe_bandwidth_mb_per_s"] <= 20 * 1.10).all()
    assert volume["storage_read_ahead_kb"].notna().all()
    # in flight: asyncio's in_flight (0: all 8 at once), the pools' workers, 1 for sequential
    ah = http[(http["phase"] == "load") & (http["variant"] == "asyncio")]
    assert sorted(ah["concurrency"]) == [2, 8]
    # no reader beats the storage's own ceiling by more than a short trial's burst
    assert (load["ceiling_storage_mb_per_s"].isna() == (load["storage"] == "local")).all()


def test_the_answer_has_a_row_per_profile_and_the_figures_draw_them(storage_run):
    work, proc, _ = storage_run
    answer = (work / "results/tables/recommendation.md").read_text()
    for profile in ("local", "smoke-volume", "smoke-http", "smoke-failing"):
        assert f"| load | storage={profile}, shard_mb=0 |" in answer  # (0: loose files)
    loader_rows = [part.split("\n")[0] for part in answer.split("| dataloader |")[1:]]
    assert any("storage=smoke-http" in row for row in loader_rows)
    assert "Not measured here" not in answer
    rec = pd.read_csv(work / "results/tables/recommendation.csv")
    http = rec[(rec["phase"] == "load") & rec["job"].str.contains("smoke-http")]
    assert http["ceiling_kind"].isin(["storage", "cpu"]).all()
    for name in FIGURES:
        assert (work / f"results/figures/{name}.png").stat().st_size > 10_000
        assert (work / f"results/report/{name}.rst").read_text().strip()
    assert "What to use on this machine" in proc.stdout


def test_a_failing_server_is_retried_counted_and_flagged_in_the_answer(storage_run):
    work, _, _ = storage_run
    trials = pd.read_csv(work / "results/tables/trials.csv")
    failing = trials[trials["storage"] == "smoke-failing"]
    assert set(failing["phase"]) == {"load", "dataloader"}
    # seed 0 resets the 4th request: every trial retried, and only what was injected
    assert (failing["retries"] >= 1).all()
    injected = failing["faults_503"] + failing["faults_reset"]
    assert (failing["retries"] == injected).all()
    assert (failing["failed_reads"] == 0).all()
    assert (failing["images"] == failing["n_images"]).all()  # every byte checked after the clock
    others = trials[trials["storage"] != "smoke-failing"]
    assert others["retries"].fillna(0).eq(0).all()
    summary = pd.read_csv(work / "results/tables/summary.csv")
    assert (summary[summary["storage"] == "smoke-failing"]["retries"] >= 1).all()
    answer = (work / "results/tables/recommendation.md").read_text()
    row = next(line for line in answer.splitlines() if "storage=smoke-failing" in line)
    assert "retried" in row


def test_nothing_of_the_emulation_outlives_the_run(storage_run):
    _, _, before = storage_run
    try:
        # what the run made (what was there before it is not its own) and still there after it
        left = sorted(_emulation_left() - before)
        assert left == [], f"the run left these behind: {left}"
    finally:
        # the machine clean either way, for the next test: the sweep only removes what a
        # process that has ended left (the next run's onstart would do the same)
        registry.sweep()


def test_a_run_without_nginx_leaves_the_http_profile_out_and_says_so(storage_run, tmp_path):
    work, _, _ = storage_run
    env = {"IMGREAD_NGINX": str(tmp_path / "no-nginx-here")}
    # the answer and the report's text (the figures would only be redrawn)
    targets = ["results/tables/recommendation.md", "results/report/workflow.rst"]
    proc = snakemake(work, *targets, "--cores", "2", *STUDY, env=env)
    line = "smoke-http (http) not measured: nginx and its echo module are not installed"
    assert line in proc.stderr  # at the run's start
    answer = (work / "results/tables/recommendation.md").read_text()
    assert f"Not measured here: {line}" in answer
    assert "storage=smoke-http" not in answer  # its cells left the grid
    assert "storage=smoke-volume" in answer  # the others measured as before
    report_text = (work / "results/report/workflow.rst").read_text()
    assert line in report_text
