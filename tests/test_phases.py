import io
import os

import pytest

from imgread.manifest import read_manifest
from imgread.readers import VARIANTS, get_variant, variant_names
from imgread.trial import verify

CASES = [(k, w) for k, v in VARIANTS.items() for w in ([1, 3] if v.parallel else [1])]


@pytest.mark.parametrize(
    "key,workers", CASES, ids=lambda c: "/".join(c) if isinstance(c, tuple) else f"w{c}"
)
def test_every_variant_does_exactly_the_manifests_work(small_dataset, key, workers):
    phase, name = key
    variant = VARIANTS[key]
    m = read_manifest(small_dataset)
    entries = m.subset(10)
    paths = [str(m.root / e.path) for e in entries]
    runner = variant.start(workers)
    try:
        results = runner.run(paths)
    finally:
        runner.close()
    images, nbytes, pixels = verify(phase, results, m.root, entries)
    assert images == 10
    assert nbytes == sum(e.bytes for e in entries)
    if phase == "load":
        assert pixels == 0
        # keyed correctly: each path maps to that file's own bytes (the study mixed them up)
        for p in paths:
            with open(p, "rb") as fh:
                assert results[p].getvalue() == fh.read()
            assert isinstance(results[p], io.BytesIO)
    else:
        assert pixels == sum(e.width * e.height for e in entries)
        assert all(isinstance(v, int) for v in results.values())  # no image kept alive
    if variant.parallel:
        assert runner.concurrency == workers


def test_verify_catches_wrong_work(small_dataset):
    from imgread.errors import VerificationError

    m = read_manifest(small_dataset)
    entries = m.subset(3)
    paths = [str(m.root / e.path) for e in entries]
    with pytest.raises(VerificationError, match="cover 2 files"):
        verify("decode", {p: entries[0].pixels for p in paths[:2]}, m.root, entries)
    swapped = {
        paths[0]: io.BytesIO(b"x" * entries[1].bytes),
        paths[1]: io.BytesIO(),
        paths[2]: io.BytesIO(),
    }
    if entries[0].bytes != entries[1].bytes:
        with pytest.raises(VerificationError, match="read"):
            verify("load", swapped, m.root, entries)


def test_process_pool_workers_are_all_started_before_the_timed_run():
    runner = get_variant("decode", "processes").start(3)
    try:
        pids = {p.pid for p in runner.pool._processes.values()}
        assert len(pids) == 3 and os.getpid() not in pids
    finally:
        runner.close()


def test_registry_names_and_unknown_variant_message():
    assert variant_names("load") == ["sequential", "asyncio", "threads"]
    assert variant_names("decode") == ["sequential", "processes", "threads"]
    with pytest.raises(ValueError, match="choose one of sequential, asyncio, threads"):
        get_variant("load", "processes")


def test_asyncio_variant_uses_the_pool_size_asyncio_would_pick():
    from concurrent.futures import ThreadPoolExecutor

    from imgread.readers import asyncio_default_workers

    stdlib_default = ThreadPoolExecutor()._max_workers  # what loop.run_in_executor(None) makes
    assert asyncio_default_workers() == stdlib_default
    runner = get_variant("load", "asyncio").start(1)
    try:
        assert runner.concurrency == stdlib_default
    finally:
        runner.close()
