"""Page faults counted over the timed region (imgread.instruments.page_faults), the allocator
setting applied in
every worker (imgread.decoders.allocator), and the shared-memory delivery paying for no fresh
mapping per image while its check after the clock still sees every image."""

from __future__ import annotations

import json
import mmap
import multiprocessing as mp
import subprocess
import sys

import pytest

from imgread.dataset import GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.decoders import DECODERS, Decoder
from imgread.errors import VerificationError
from imgread.instruments import page_faults
from imgread.phases.decode import phase as decode_phase
from imgread.trial.pools import process_start_method
from imgread.trial.run import TrialSpec, run_trial

from ..support.helpers import HAVE_PROC, SHM

PAGE = mmap.PAGESIZE


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """6 images of 1024 x 768: 2.4 MB decoded, 576 pages each."""
    return generate(
        tmp_path_factory.mktemp("photos") / "ds",
        GenerateParams(count=6, width=1024, height=768, target_bytes=150_000),
        progress=False,
    )


@pytest.mark.parametrize(
    "variant,workers,delivery",
    [("sequential", 1, "discard"), ("processes", 2, "discard"), ("threads", 2, "pixels")],
)
def test_a_trial_records_its_minor_faults_in_all_and_per_image(
    small_dataset, variant, workers, delivery
):
    params = {"delivery": delivery}
    d = run_trial(TrialSpec(str(small_dataset), "decode", variant, 6, workers, params=params))
    d = d.to_dict()
    assert isinstance(d["minor_faults"], int) and d["minor_faults"] >= 0
    assert d["minor_faults_per_image"] == pytest.approx(d["minor_faults"] / d["images"])
    assert d["minor_faults_method"] == ("proc-tree" if HAVE_PROC else "getrusage")
    assert d["allocator"] == "default" and d["allocator_settings"].startswith("pillow ")


def _touch(megabytes: int, ready, touched, go) -> None:
    ready.wait()
    pages = mmap.mmap(-1, megabytes << 20)  # a fresh mapping (no huge pages asked for)
    for offset in range(0, len(pages), PAGE):
        pages[offset] = 1  # every page written: one minor fault each
    touched.set()
    go.wait()  # alive while the parent takes its second snapshot
    pages.close()


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_the_faults_of_a_live_child_are_counted_before_it_exits():
    ctx = mp.get_context("spawn")
    ready, touched, go = ctx.Event(), ctx.Event(), ctx.Event()
    child = ctx.Process(target=_touch, args=(64, ready, touched, go))
    child.start()
    try:
        before = page_faults.snapshot()
        ready.set()
        assert touched.wait(60)
        after = page_faults.snapshot()
        assert child.is_alive()
    finally:
        go.set()
        child.join(30)
    cols = page_faults.columns(before, after, images=4)
    assert cols["minor_faults"] >= (64 << 20) // PAGE  # 16,384 pages of 4 KiB each
    assert cols["minor_faults_per_image"] == cols["minor_faults"] / 4
    assert page_faults.columns(None, None, 4)["minor_faults"] is None


_WORKER_PROBE = """
import json, sys
from imgread.decoders import allocator
from imgread.phases.registry import get_phase
from imgread.dataset.manifest import read_manifest
phase = get_phase("decode")
m = read_manifest(sys.argv[1])
out = {}
for variant, delivery in (("processes", "discard"), ("processes-shm", "pixels")):
    for name in ("tuned", "default"):
        params = phase.resolve({"delivery": delivery, "allocator": name})
        ctx = phase.context(m, 4, variant, 2, params)
        runner = phase.start(ctx)
        try:
            states = [runner.pool.submit(allocator.state).result() for _ in range(8)]
        finally:
            runner.close()
            runner.release()
        out[f"{variant} {name}"] = states
print(json.dumps(out))
"""


def test_allocator_tuned_sets_pillows_block_cache_in_every_worker(small_dataset):
    # in a process of its own: glibc's tuned settings cannot be undone in this one
    r = subprocess.run(
        [sys.executable, "-c", _WORKER_PROBE, str(small_dataset)],
        capture_output=True,
        text=True,
        check=True,
    )
    from imgread.decoders import allocator

    for cell, states in json.loads(r.stdout).items():
        blocks = {s["pillow_blocks_max"] for s in states}
        if cell.endswith("tuned"):
            assert blocks == {allocator.PILLOW_BLOCKS_MAX}, cell
        else:  # a worker of a default cell after a tuned one: Pillow's cache as imported
            assert blocks == {0}, cell


@pytest.mark.skipif(not (SHM.is_dir() and HAVE_PROC), reason="needs Linux /dev/shm and /proc")
@pytest.mark.parametrize("decoder", ["pillow", "simplejpeg"])
def test_shared_memory_delivery_pays_no_fresh_mapping_per_image(photos, decoder):
    """The segment is faulted in before the clock and each worker decodes into its slot with
    no array of its own (the default allocator: nothing kept by the libraries): the timed run
    maps far fewer pages than one image's 576, where the old design mapped every slot's pages
    and each decoded array's for the first time inside the clock. (OpenCV allocates its BGR
    array itself: that is its library's cost, which the tuned allocator keeps.)"""
    params = {"decoder": decoder, "delivery": "pixels"}
    spec = TrialSpec(str(photos), "decode", "processes-shm", 6, 2, params=params)
    d = subprocess_trial(spec)
    assert d["checksums_checked"] == 6 and d["allocator"] == "default"
    assert d["minor_faults_per_image"] < 576 / 4, d["minor_faults_per_image"]


def subprocess_trial(spec: TrialSpec) -> dict:
    """The trial's record from a process of its own (the tuned allocator stays with it)."""
    code = (
        "import json, sys; from imgread.trial.run import TrialSpec, run_trial; "
        "spec = TrialSpec(**json.loads(sys.argv[1])); print(json.dumps(run_trial(spec).to_dict()))"
    )
    fields = {k: getattr(spec, k) for k in ("manifest", "phase", "variant", "params")}
    fields.update(n_images=spec.n_images, workers=spec.workers)
    r = subprocess.run(
        [sys.executable, "-c", code, json.dumps(fields)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.skipif(not SHM.is_dir(), reason="needs Linux /dev/shm")
@pytest.mark.skipif(process_start_method() != "fork", reason="the patch reaches forked workers")
def test_the_check_after_the_clock_reads_every_slot(photos, monkeypatch):
    m = read_manifest(photos)
    skipped = str(m.root / m.entries[1].path)
    real = DECODERS["simplejpeg"]

    def skip_one(src, out):  # a decoder that leaves one image's slot unwritten
        if src != skipped:
            real.into_fn(src, out)

    lazy = Decoder(real.name, real.decode_fn, real.version_fn, True, "", real.count_fn, skip_one)
    monkeypatch.setitem(decode_phase.DECODERS, "simplejpeg", lazy)
    params = {"decoder": "simplejpeg", "delivery": "pixels"}
    spec = TrialSpec(str(photos), "decode", "processes-shm", 6, 2, params=params)
    with pytest.raises(VerificationError, match=f"{m.entries[1].path}.*checksum differs"):
        run_trial(spec)
