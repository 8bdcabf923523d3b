"""Nothing of the storage emulation outlives a trial, however it ends: success and failure are
covered by the kinds' own tests; here a real ``imgread trial`` on an http and a volume profile
is stopped by SIGTERM (as Snakemake stops a job) and by Ctrl-C inside its timed work, and one
killed outright (SIGKILL: nothing can clean up) leaves what the next run's sweep removes."""

from __future__ import annotations

import signal
import time

import pytest

from imgread.storage import registry

from ..support.helpers import NOTHING, emulation_of, kill_session, start_trial

HTTP = registry.KINDS["http"]
VOLUME = registry.KINDS["volume"]

# Slow enough that a trial is still in its timed work when it is stopped: 12 images at 300 ms
# a request (3.6 s one after another), or 12 x 50 KB at 5 IOPS.
CONFIG = """
storage:
  - {name: slow-http, kind: http, latency_ms: 300, bandwidth_mbit: 100}
  - {name: slow-volume, kind: volume, read_iops: 5, read_mb_per_s: 1}
"""


def _wait_for(proc, what: str, pid: int, timeout: float = 30) -> None:
    """Until the trial has made its ``what`` (and is past its probe, into the timed work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if emulation_of(pid)[what]:
            time.sleep(2.0)  # the probe (about a second) done, the clock running
            return
        time.sleep(0.05)
    out = proc.communicate(timeout=10) if proc.poll() is not None else ("", "")
    raise AssertionError(f"the trial never made its {what}: {out[1][-2000:]}")


def _trial(small_dataset, tmp_path, profile: str):
    cfg = tmp_path / "storage.yaml"
    cfg.write_text(CONFIG)
    return start_trial(
        small_dataset,
        tmp_path / "rec.json",
        "--phase",
        "load",
        "--variant",
        "threads",
        "--workers",
        "2",
        "--n",
        "12",
        "--storage",
        profile,
        "--storage-config",
        str(cfg),
    )


def _skip_unless(kind):
    why = kind.missing()
    if why:
        pytest.skip(f"{kind.name}: {why}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
@pytest.mark.parametrize("profile,what", [("slow-http", "netns"), ("slow-volume", "cgroups")])
def test_a_stopped_trial_leaves_nothing_behind(small_dataset, tmp_path, sig, profile, what):
    _skip_unless(HTTP if what == "netns" else VOLUME)
    proc = _trial(small_dataset, tmp_path, profile)
    try:
        _wait_for(proc, what, proc.pid)
        assert proc.poll() is None, "the trial ended before it could be stopped"
        proc.send_signal(sig)
        proc.wait(timeout=15)
    finally:
        kill_session(proc)
    assert proc.returncode != 0
    assert not (tmp_path / "rec.json").exists()  # no time recorded
    assert emulation_of(proc.pid) == NOTHING


def test_a_killed_trials_leftovers_are_swept_by_the_next_run(small_dataset, tmp_path):
    _skip_unless(HTTP)
    proc = _trial(small_dataset, tmp_path, "slow-http")
    try:
        _wait_for(proc, "netns", proc.pid)
        proc.send_signal(signal.SIGKILL)  # nothing of the trial runs after this
        proc.wait(timeout=15)
        left = emulation_of(proc.pid)
        assert left["netns"] and left["nginx"]  # what a killed trial leaves
        removed = registry.sweep()
        assert any(left["netns"][0] in line for line in removed), removed
        assert emulation_of(proc.pid) == NOTHING
    finally:
        kill_session(proc)
        registry.sweep()
