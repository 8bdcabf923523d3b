"""A failing object store (#19 item 3): 503 Slow Down, connections reset mid-body, stalled
responses and a server killed mid-trial, injected by imgread.storage.http.faultproxy in front of the
http kind's nginx; readers retry with capped exponential backoff and jitter, every retry is
counted, a read that still fails ends the trial with the reason and the counts, never a hang.

The tests that need the kind (root, nginx, its echo module) are skipped elsewhere, with the
reason. Every loop is bounded in count and every read in time; every session is closed and
checked to leave nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import pytest

from imgread.answer import text
from imgread.errors import TrialError, UserError
from imgread.storage import http as http_kind
from imgread.storage import registry
from imgread.storage.http import faultproxy, netns
from imgread.trial.run import TrialSpec, run_trial

from ..support.helpers import read_async

KIND = http_kind.KIND
WHY = KIND.missing()
needs_kind = pytest.mark.skipif(WHY is not None, reason=f"kind http cannot run here: {WHY}")
QUICK = {"latency_ms": 1, "bandwidth_mbit": 10000, "backoff_ms": 5, "backoff_cap_ms": 40}


def profile(**settings):
    entry = {"name": "failing", "kind": "http", **QUICK, **settings}
    return registry.parse_profiles([entry])["failing"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mine() -> list[str]:
    return [ns for ns in netns.namespaces() if ns.startswith(f"imgread-{os.getpid()}-")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """24 files of random bytes, 40-120 KB, readable by nginx's workers."""
    root = tmp_path_factory.mktemp("faults") / "ds"
    root.mkdir()
    rng = random.Random(11)
    for i in range(24):
        (root / f"f{i:02d}.bin").write_bytes(rng.randbytes(rng.randint(40_000, 120_000)))
    for path in [root, *root.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def digests(root) -> dict[str, str]:
    return {str(p): sha(p.read_bytes()) for p in sorted(root.iterdir())}


def _read_all(opener, paths: list[str]) -> list[str]:
    try:
        return [sha(opener.read(p)) for p in paths]
    finally:
        opener.close()


# --------------------------------------------------------------------------- no server needed


def test_the_fault_plan_is_seeded_and_keeps_its_shares():
    a = faultproxy.FaultPlan(3, 0.2, 0.1, 0.05)
    b = faultproxy.FaultPlan(3, 0.2, 0.1, 0.05)
    drawn = [a.next() for _ in range(4000)]
    assert drawn == [b.next() for _ in range(4000)]  # the same requests fail on every run
    share = {k: drawn.count(k) / len(drawn) for k in ("503", "reset", "stall", "ok")}
    assert share["503"] == pytest.approx(0.2, abs=0.03)
    assert share["reset"] == pytest.approx(0.1, abs=0.02)
    assert share["stall"] == pytest.approx(0.05, abs=0.015)
    assert [faultproxy.FaultPlan(0, 0, 0, 0).next() for _ in range(50)] == ["ok"] * 50
    with pytest.raises(ValueError, match="sum to at most 1"):
        faultproxy.FaultPlan(0, 0.6, 0.5, 0)


def test_backoff_is_capped_exponential_with_full_jitter(tmp_path):
    policy = http_kind.RetryPolicy(retries=6, base_ms=10, cap_ms=100, log=str(tmp_path / "r"))
    rng = random.Random(1)
    for k in range(8):
        bound = min(100, 10 * 2**k) / 1000
        waits = [policy.wait_s(k, rng) for _ in range(300)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > 0.8 * bound  # jitter spans the whole window, not a fixed delay
    policy.note("retry", "503", 0.25)
    policy.note("retry", "503", 0.5)
    policy.note("retry", "reset", 0.25)
    policy.note("fail", "refused", 0.0)
    counts = http_kind.read_retry_log(policy.log)
    assert counts == {
        "retries": 3,
        "retry_reasons": {"503": 2, "reset": 1},
        "retry_wait_seconds": 1.0,
        "failed_reads": 1,
    }
    assert http_kind.read_retry_log(str(tmp_path / "none"))["retries"] == 0


def test_the_trial_counts_the_change_over_its_clock_and_says_it():
    before = {"retries": 2, "retry_reasons": {"503": 2}, "retry_wait_seconds": 0.1}
    before["faults_503"] = 2
    after = {"retries": 7, "retry_reasons": {"503": 5, "reset": 2}, "retry_wait_seconds": 0.4}
    after |= {"failed_reads": 1, "faults_503": 5, "faults_reset": 2, "server_requests": 30}
    failing = profile()
    counts = registry.counts_change(failing, before, after)  # what the trial records
    assert counts["retries"] == 5 and counts["retry_reasons"] == "503:3 reset:2"
    assert counts["retry_wait_seconds"] == pytest.approx(0.3)
    line = registry.counts_line(failing, counts)  # what a failed trial's message says
    assert "5 retries (503:3 reset:2)" in line and "1 read(s) failed for good" in line
    assert "30 requests and injected 503 x 3, reset x 2" in line
    assert registry.counts_line(failing, {"retries": 0, "failed_reads": 0}) == ""
    # the kind counts and words its own (imgread.storage.base.Kind); the registry asks it
    assert KIND.counts_change(before, after) == counts
    assert line == f" (the transport: {KIND.describe_counts(counts)})"
    assert line == f" (the transport: {KIND.describe_counts(counts)})"
    assert registry.counts_line(failing, {"retries": 0, "failed_reads": 0}) == ""
    assert registry.counts_line(failing, None) == "" and KIND.describe_counts({}) == ""
    for other in ("local", "memory", "volume"):  # the kinds that count nothing say nothing
        assert registry.KINDS[other].describe_counts(counts) == ""
        assert registry.KINDS[other].counts_change(None, {}) == {}


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"fault_503": 1.5}, "fault_503"),
        ({"fault_reset": -0.1}, "fault_reset"),
        ({"fault_503": 0.6, "fault_stall": 0.6}, "fault_503 \\+ fault_reset \\+ fault_stall"),
        ({"retries": 2.5}, "retries"),
        ({"retries": "three"}, "retries"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"kill_after": -1}, "kill_after"),
        ({"fault_503": 0.1, "tls": True}, "tls: false"),
    ],
)
def test_a_bad_fault_setting_names_the_field(settings, field):
    with pytest.raises(UserError, match=f"storage profile 'failing'.*{field}"):
        profile(**settings)


def test_settings_added_later_leave_an_old_profiles_params_as_they_were():
    plain = registry.parse_profiles([{"name": "plain", "kind": "http"}])["plain"]
    assert set(plain.as_dict()) == {
        "name", "kind", "latency_ms", "bandwidth_mbit", "tls", "server_workers",
    }  # fmt: skip
    assert profile(backoff_ms=50).as_dict()["backoff_cap_ms"] == 40  # set: kept
    assert plain.params["retries"] == 2 and plain.params["fault_503"] == 0.0
    assert profile(fault_503=0.1).as_dict()["fault_503"] == 0.1
    assert not http_kind.has_faults(plain) and http_kind.has_faults(profile(kill_after=3))


def test_the_answer_flags_a_cell_whose_reads_were_retried():
    row = dict(
        phase="load", machine="m", dataset="d", job="-", n_images=8, also_for_n="-",
        variant="threads", workers=4, settings="storage=failing", objective="mb_per_s",
        unit="MB/s", median=10.0, ci_low=9.0, ci_high=11.0, too_few_repetitions=False,
        cv=0.05, repetitions=3, interfered_trials=0, as_good_as_best=1,
        speedup_over_default=2.0, ceiling_kind="-", ceiling_fraction=float("nan"),
        memory_bytes=float("nan"),
    )  # fmt: skip
    flagged = text.recommendation_rows(pd.DataFrame([dict(row, retries=12)]))[0]
    clean = text.recommendation_rows(pd.DataFrame([dict(row, retries=0)]))[0]
    assert any("12 reads retried" in cell for cell in flagged)
    assert not any("retried" in cell for cell in clean)


# --------------------------------------------------------------------------- the server


@needs_kind
@pytest.mark.parametrize(
    "settings, reasons",
    [
        ({"fault_503": 0.3}, {"503"}),
        ({"fault_reset": 0.3}, {"reset", "short-body"}),
        ({"fault_stall": 0.15, "stall_s": 3, "timeout_s": 0.4}, {"timeout"}),
    ],
    ids=["503", "reset", "stall"],
)
def test_every_reader_retries_to_the_right_bytes_and_every_retry_is_counted(
    root, digests, settings, reasons
):
    paths = list(digests)
    expected = list(digests.values())
    prof = profile(retries=8, fault_seed=5, **settings)
    t0 = time.monotonic()
    with registry.session(prof, root) as (where, probe):
        opener = where.opener
        assert probe.latency_ms is not None  # the probe is passed through, unharmed
        assert _read_all(opener, paths) == expected  # blocking, one connection
        with ThreadPoolExecutor(4) as pool:
            chunks = [paths[i::4] for i in range(4)]
            # each thread its own connection; closed together after the pool (close() closes
            # every connection of this process)
            got = list(pool.map(lambda c: [sha(opener.read(p)) for p in c], chunks))
        opener.close()
        assert sorted(sum(got, [])) == sorted(expected)
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            got = list(pool.map(_read_all, [opener, opener], [paths[0::2], paths[1::2]]))
        assert sorted(sum(got, [])) == sorted(expected)

        assert [sha(b) for b in read_async(opener, paths, 4)] == expected
        counts = where.counts()
    assert time.monotonic() - t0 < 120
    assert not mine()
    injected = counts["faults_503"] + counts["faults_reset"] + counts["faults_stall"]
    # 4 passes over 24 files: 96 reads; every fault injected is one retry, nothing else is
    assert injected >= 5
    assert counts["retries"] == injected
    assert counts["server_requests"] == 96 + injected
    assert counts["failed_reads"] == 0
    assert set(counts["retry_reasons"]) <= reasons
    assert counts["retry_wait_seconds"] > 0


@needs_kind
def test_a_killed_server_fails_the_read_with_the_reason_never_a_hang(root, digests):
    paths = list(digests)
    prof = profile(kill_after=6, retries=3, timeout_s=2)
    with registry.session(prof, root) as (where, _):
        server = where.proc.pid
        got = [sha(where.opener.read(p)) for p in paths[:5]]
        assert got == list(digests.values())[:5]
        t0 = time.monotonic()
        with pytest.raises(http_kind.ReadFailed, match=r"after 4 attempt\(s\) \(3 retries"):
            where.opener.read(paths[5])
        assert time.monotonic() - t0 < 5  # refused at once, backoff capped at 40 ms
        assert where.proc.wait(5) is not None and not netns.pid_alive(server)  # killed
        counts = where.counts()
    assert counts["server_killed"] == 1 and counts["failed_reads"] == 1
    assert counts["retries"] == 3
    assert not mine()


@needs_kind
def test_a_trial_on_a_failing_server_records_its_retries(small_dataset):
    # seed 4: 5 of the first 12 requests are answered 503 (the draw is the same every run)
    entry = {"name": "failing", "kind": "http", **QUICK, "fault_503": 0.25, "fault_seed": 4}
    entry["retries"] = 8
    spec = TrialSpec(
        str(small_dataset),
        "load",
        "threads",
        n_images=12,
        workers=2,
        params={"storage": "failing"},
        storage=entry,
    )
    d = run_trial(spec).to_dict()
    assert d["images"] == 12  # every image checked against the manifest after the clock
    assert d["retries"] >= 1 and d["retries"] == d["faults_503"]
    assert d["server_requests"] == 12 + d["retries"]
    assert d["retry_reasons"] == f"503:{d['retries']}"
    assert not mine()


@needs_kind
@pytest.mark.parametrize("variant, workers", [("threads", 2), ("processes", 2), ("asyncio", 1)])
def test_a_trial_whose_server_dies_ends_with_the_counts(small_dataset, variant, workers):
    entry = {"name": "dying", "kind": "http", **QUICK, "kill_after": 5, "retries": 2}
    spec = TrialSpec(
        str(small_dataset),
        "load",
        variant,
        n_images=12,
        workers=workers,
        params={"storage": "dying"},
        storage=entry,
    )
    t0 = time.monotonic()
    with pytest.raises(TrialError) as failed:
        run_trial(spec)
    assert time.monotonic() - t0 < 60
    message = str(failed.value)
    assert "failed after 3 attempt(s)" in message and "no time recorded" in message
    assert "the transport:" in message and "killed x 1" in message
    assert not mine()


# --------------------------------------------------------------------------- a taken port

_HOLD = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\n"
    "print('held', flush=True); time.sleep(60)\n"
)


@needs_kind
@pytest.mark.parametrize(
    "settings, who, port", [({}, "nginx", 8080), ({"fault_503": 0.1}, "the fault proxy", 8080)]
)
def test_a_port_already_in_use_is_named_and_nothing_is_left(root, monkeypatch, settings, who, port):
    """Only something started inside the session's own namespace could hold its port: a
    process made to, before the server starts. The session says which port and tears down."""
    made = netns.make_link
    holders = []

    def occupied(rate_mbit):
        link = made(rate_mbit)
        args = ["ip", "netns", "exec", link.ns, sys.executable, "-c", _HOLD]
        holder = subprocess.Popen(
            [*args, link.ns_address, str(port)], stdout=subprocess.PIPE, text=True
        )
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return link

    monkeypatch.setattr(netns, "make_link", occupied)
    t0 = time.monotonic()
    with pytest.raises(
        OSError,
        match=f"{who} cannot listen on 10\\.213\\.[0-9.]+:{port}: the port is already in use",
    ):
        KIND.open(profile(**settings), root)
    assert time.monotonic() - t0 < 15
    assert holders and holders[0].wait(10) is not None  # killed with the namespace
    holders[0].stdout.close()
    assert not mine()
