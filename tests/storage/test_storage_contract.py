"""The storage contract (imgread.storage.base), over every registered kind: a kind this machine
cannot run is skipped with its own one-line reason. Then the reading phases through the toy
in-memory kind, so that what a trial records of its storage is checked without root."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing as mp
import os
import pickle
import subprocess
import time

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import TrialError, UserError
from imgread.instruments import memcg
from imgread.storage import registry, volume
from imgread.storage.base import Kind, Probe, Profile
from imgread.storage.http import netns
from imgread.trial.run import TrialSpec, run_trial

from ..support.helpers import read_async

KINDS = sorted(registry.KINDS)
# One small, fast profile per kind (every kind's defaults filled in by its own check).
SMALL = {"volume": {"read_iops": 5000, "read_mb_per_s": 200}, "http": {"latency_ms": 2}}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_in_child(opener, path):
    return _digest(opener.read(path))


@pytest.fixture(params=KINDS)
def kind(request) -> Kind:
    k = registry.KINDS[request.param]
    why = k.missing()
    if why:
        pytest.skip(f"{k.name}: {why}")
    return k


def test_every_builtin_kind_is_registered_with_a_contract():
    assert {"local", "volume", "http", "memory"} <= set(KINDS)
    for name, k in registry.KINDS.items():
        assert isinstance(k, Kind) and k.name == name and k.description and k.needs
        missing = k.missing()
        assert missing is None or (isinstance(missing, str) and "\n" not in missing)


def test_a_session_serves_exactly_the_manifests_bytes_in_every_form(kind, small_dataset):
    m = read_manifest(small_dataset)
    profile = kind.check("probe-me", SMALL.get(kind.name, {}))
    entries = m.entries[:6]
    paths = [str(m.root / e.path) for e in entries]
    want = {str(m.root / e.path): e.sha256 for e in entries}
    with registry.session(profile, m.root) as (where, probe):
        assert isinstance(probe, Probe)
        assert isinstance(where.settings(), dict)
        opener = where.opener
        # blocking, one after another and from a pool of threads
        assert {p: _digest(opener.read(p)) for p in paths} == want
        with cf.ThreadPoolExecutor(3) as pool:
            got = pool.map(lambda p: _digest(opener.read(p)), paths)
            assert dict(zip(paths, got, strict=True)) == want

        # asyncio, at most 2 in flight
        got = read_async(opener, paths, 2)
        assert dict(zip(paths, map(_digest, got), strict=True)) == want
        # pickled into a worker process, which opens its own connection
        pickle.dumps(opener)
        with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
            assert (
                pool.submit(_read_in_child, opener, paths[0]).result(timeout=60) == want[paths[0]]
            )
        opener.close()
    where.close()  # closing twice is allowed


def test_a_kind_rejects_unknown_fields_naming_them(kind):
    with pytest.raises(UserError, match="nonsense"):
        kind.check("p", {"nonsense": 1})


def _dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    assert not memcg.alive(done.pid)
    return done.pid


def _http_leftover(pid: int, n: int):
    """A network namespace named for trial ``pid``: (its name, whether it exists, remove it)."""
    name = f"imgread-{pid}-{n}"
    netns.run(["ip", "netns", "add", name])
    return name, lambda: name in netns.namespaces(), lambda: netns.delete_namespace(name)


def _volume_leftover(pid: int, n: int):
    """A volume cgroup named for trial ``pid``, where the kind makes its own."""
    where = volume.place()
    folder = where.parent / f"imgread-{pid}-{n}"
    folder.mkdir()
    return (
        str(folder),
        folder.exists,
        lambda: folder.exists() and memcg.remove_cgroup(folder, where.mount, 0.0),
    )


# Each kind that leaves things outside its trial's process: how to make one as a trial would
LEFTOVERS = {"http": _http_leftover, "volume": _volume_leftover}


def test_sweep_answers_with_lines(kind):
    make = LEFTOVERS.get(kind.name)
    if make is None:
        # a kind that makes nothing outside its trial's process has nothing to sweep
        assert type(kind).sweep is Kind.sweep, f"{kind.name} sweeps: add it to LEFTOVERS"
        assert kind.sweep() == []
        return
    dead = _dead_pid()
    made = []
    try:
        made.append(make(dead, 0))
        made.append(make(os.getpid(), 99999))  # a live trial's: to be left alone
        (dead_name, dead_exists, _), (live_name, live_exists, _) = made
        removed = kind.sweep()
        assert isinstance(removed, list) and all(isinstance(x, str) for x in removed)
        # a line per thing removed, naming it and the dead trial it was left by
        named = [line for line in removed if dead_name in line]
        assert len(named) == 1 and str(dead) in named[0], removed
        assert not dead_exists()
        assert live_exists() and not [line for line in removed if live_name in line], removed
        assert not [line for line in kind.sweep() if dead_name in line]  # said once, when removed
    finally:
        for _, _, remove in made:
            remove()


def test_profiles_in_the_config_are_checked_field_by_field():
    with pytest.raises(UserError, match=r"storage\[0\].name"):
        registry.parse_profiles([{"name": "Bad Name", "kind": "local"}])
    with pytest.raises(UserError, match="unknown storage kind 'nfs'"):
        registry.parse_profiles([{"name": "x", "kind": "nfs"}])
    with pytest.raises(UserError, match="'x'.*kind is required"):
        registry.parse_profiles([{"name": "x"}])
    with pytest.raises(UserError, match="defined twice"):
        registry.parse_profiles([{"name": "x", "kind": "local"}, {"name": "x", "kind": "local"}])
    with pytest.raises(UserError, match="latency_ms must be a number"):
        registry.parse_profiles([{"name": "x", "kind": "memory", "latency_ms": "fast"}])
    with pytest.raises(UserError, match="must be a list"):
        registry.parse_profiles({"name": "x"})
    profiles = registry.parse_profiles([{"name": "toy", "kind": "memory", "latency_ms": 3}])
    assert profiles["local"] == Profile("local", "local", {})
    assert profiles["toy"].params == {"latency_ms": 3.0}


def test_a_probed_latency_off_the_profile_fails_the_trial_with_the_numbers():
    toy = Profile("toy", "memory", {"latency_ms": 20.0})
    registry.check_probe(toy, Probe(latency_ms=24.0))  # within 25 %
    with pytest.raises(TrialError, match="probed latency 30.00 ms is off the profile's 20 ms"):
        registry.check_probe(toy, Probe(latency_ms=30.0))
    tiny = Profile("tiny", "memory", {"latency_ms": 1.0})
    registry.check_probe(tiny, Probe(latency_ms=2.9))  # within the 2 ms floor


@pytest.mark.parametrize(
    "variant,workers,in_flight",
    [("sequential", 1, "0"), ("threads", 4, "0"), ("asyncio", 1, "4"), ("processes", 2, "0")],
)
def test_every_load_reader_reads_through_the_storage_and_records_it(
    small_dataset, variant, workers, in_flight
):
    toy = {"name": "toy", "kind": "memory", "latency_ms": 5.0}
    spec = TrialSpec(
        str(small_dataset),
        "load",
        variant,
        n_images=8,
        workers=workers,
        params={"storage": "toy", "in_flight": in_flight},
        storage=toy,
    )
    d = run_trial(spec).to_dict()
    assert d["storage"] == "toy" and d["storage_kind"] == "memory"
    assert d["storage_profile"] == '{"latency_ms": 5.0}'
    assert d["images"] == 8
    assert 4.0 <= d["probe_latency_ms"] <= 8.0  # the toy's sleep, probed
    # in flight: 1 for sequential, the workers for pools, in_flight for asyncio
    assert d["concurrency"] == {"sequential": 1, "asyncio": 4}.get(variant, workers)
    little = d["concurrency"] / (d["probe_latency_ms"] / 1e3)
    assert d["ceiling_little_images_per_s"] == pytest.approx(little)
    assert d["images_per_s"] <= little * 1.05  # no reader beats Little's law
    assert d["server_cpu_seconds"] is None  # the toy has no server


def test_a_trial_whose_grid_key_and_profile_disagree_is_refused(small_dataset):
    spec = TrialSpec(
        str(small_dataset),
        "load",
        "sequential",
        n_images=2,
        params={"storage": "other"},
        storage={"name": "toy", "kind": "memory"},
    )
    with pytest.raises(UserError, match="storage='other'.*'toy'"):
        run_trial(spec)


def test_a_probed_bandwidth_above_the_cap_fails_the_trial():
    vol = registry.get_kind("volume").check("vol", {"read_iops": 100, "read_mb_per_s": 10})
    registry.check_probe(vol, Probe(bandwidth_mb_per_s=10.5))  # the probe's own counting
    registry.check_probe(vol, Probe(bandwidth_mb_per_s=2.0))  # below: this machine's limit
    with pytest.raises(TrialError, match="probed bandwidth 12.0 MB/s is above .* 10 MB/s"):
        registry.check_probe(vol, Probe(bandwidth_mb_per_s=12.0))


def test_a_record_made_before_storage_profiles_keeps_its_meaning(small_dataset, tmp_path):
    import json

    from imgread.answer.analysis import load_records
    from imgread.trial.run import write_record

    rec = run_trial(TrialSpec(str(small_dataset), "load", "sequential", n_images=2)).to_dict()
    for new in ("placement", "storage", "storage_kind", "storage_profile", "in_flight"):
        rec.pop(new)
    rec["storage"] = "node-local copy in /scratch"  # what the column meant then
    old = tmp_path / "old.json"
    old.write_text(json.dumps(rec))
    new = write_record(
        run_trial(TrialSpec(str(small_dataset), "load", "sequential", 2)), tmp_path / "new.json"
    )
    trials, _ = load_records([old, new])
    assert list(trials["placement"]) == ["node-local copy in /scratch", "in place"]
    assert list(trials["storage"]) == ["local", "local"]  # both read the files where they are
    assert list(trials["in_flight"]) == ["0", "0"]


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_zombie_is_dead_to_the_one_liveness_check():
    """A child that exited and is not yet reaped is dead to the sweeps of every kind (http's
    namespaces and folders, volume's and memcg's cgroups): one function says so for all."""
    assert netns.pid_alive is memcg.alive
    assert memcg.alive(os.getpid()) and not memcg.alive(0) and not memcg.alive(-1)
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the child: exit at once, left unreaped by the parent
    try:
        deadline = time.monotonic() + 10
        while _state(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(pid) == "Z"  # a real zombie: it ended, its parent has not waited
        assert not memcg.alive(pid)
        assert not netns.pid_alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert _state(pid) == "gone" and not memcg.alive(pid)
