import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError, VerificationError
from imgread.layout import params_segment, parse_segment
from imgread.phases.load.phase import asyncio_default_workers
from imgread.phases.registry import PHASES, get_phase

# Results keyed by path (load, decode); the DataLoader and the stream deliver batches and
# frames and have their own tests (test_dataloader.py, test_stream.py).
CASES = [
    (phase.name, name, w)
    for phase in (PHASES["load"], PHASES["decode"])
    for name, v in phase.variants.items()
    if not v.allowed  # variants that only take some params are tested with them elsewhere
    for w in ([1, 3] if v.parallel else [1])
]


def _run(phase, ctx):
    runner = phase.start(ctx)
    try:
        return runner, runner.run(list(ctx.jobs))
    finally:
        runner.close()


@pytest.mark.parametrize("phase_name,variant,workers", CASES)
def test_every_variant_does_exactly_the_manifests_work(small_dataset, phase_name, variant, workers):
    phase = get_phase(phase_name)
    m = read_manifest(small_dataset)
    entries = m.subset(10)
    ctx = phase.context(m, 10, variant, workers)
    jobs = ctx.jobs
    runner, results = _run(phase, ctx)
    checked = phase.verify(ctx, results)
    assert checked.images == 10
    assert checked.bytes == sum(e.bytes for e in entries)
    if phase_name == "load":
        assert checked.pixels == 0
        # keyed correctly: each path maps to that file's own bytes (the study mixed them up)
        for j in jobs:
            with open(j.path, "rb") as fh:
                assert results[j.path].getvalue() == fh.read()
            assert isinstance(results[j.path], io.BytesIO)
    else:
        assert checked.pixels == sum(e.width * e.height for e in entries)
        assert all(isinstance(v, int) for v in results.values())  # no image kept alive
    if phase.variants[variant].parallel:
        assert runner.concurrency == workers


def test_verify_catches_wrong_work(small_dataset):
    m = read_manifest(small_dataset)
    entries = m.subset(3)
    paths = [str(m.root / e.path) for e in entries]
    decode, load = get_phase("decode"), get_phase("load")
    ctx = decode.context(m, 3, "sequential")
    with pytest.raises(VerificationError, match="cover 2 files"):
        decode.verify(ctx, {p: entries[0].pixels for p in paths[:2]})
    wrong = {p: e.pixels for p, e in zip(paths, entries, strict=True)}
    wrong[paths[1]] += 1
    with pytest.raises(VerificationError, match="pixels"):
        decode.verify(ctx, wrong)
    swapped = {
        paths[0]: io.BytesIO(b"x" * (entries[0].bytes + 1)),
        paths[1]: io.BytesIO(),
        paths[2]: io.BytesIO(),
    }
    with pytest.raises(VerificationError, match="read"):
        load.verify(load.context(m, 3, "sequential"), swapped)


def test_process_pool_workers_are_all_started_before_the_timed_run(small_dataset):
    decode = get_phase("decode")
    runner = decode.start(decode.context(small_dataset, 1, "processes", 3))
    try:
        pids = {p.pid for p in runner.pool._processes.values()}
        assert len(pids) == 3 and os.getpid() not in pids
    finally:
        runner.close()


def test_registry_names_and_unknown_names_messages():
    assert list(PHASES) == ["load", "decode", "dataloader", "stream"]
    assert list(get_phase("load").variants) == ["sequential", "asyncio", "threads", "processes"]
    assert list(get_phase("decode").variants) == [
        "sequential",
        "processes",
        "threads",
        "processes-shm",
    ]
    with pytest.raises(UserError, match="choose one of sequential, asyncio, threads, processes"):
        get_phase("load").variant("mmap")
    with pytest.raises(UserError, match="unknown phase 'encode'; choose one of load, decode, "):
        get_phase("encode")
    with pytest.raises(UserError, match="unknown decoder 'libjpeg'"):
        get_phase("decode").resolve({"decoder": "libjpeg"})
    with pytest.raises(UserError, match=r"unknown setting\(s\) \['decoder'\]"):
        get_phase("load").resolve({"decoder": "pillow"})


def test_params_round_trip_through_the_trial_path():
    params = get_phase("decode").resolve({"decoder": "pillow-draft", "output": "crop224"})
    seg = params_segment(params)
    assert seg == "decoder-pillow-draft+output-crop224+delivery-discard+allocator-default"
    assert parse_segment(seg) == params
    assert params_segment({}) == "default" and parse_segment("default") == {}


def test_asyncio_variant_uses_the_pool_size_asyncio_would_pick(small_dataset):
    stdlib_default = ThreadPoolExecutor()._max_workers  # what loop.run_in_executor(None) makes
    assert asyncio_default_workers() == stdlib_default
    load = get_phase("load")
    runner = load.start(load.context(small_dataset, 1, "asyncio"))
    try:
        assert runner.concurrency == stdlib_default
    finally:
        runner.close()
