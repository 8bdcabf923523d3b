"""The DataLoader phase and the decoded cache: real DataLoaders, real worker processes."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from imgread.dataset import GenerateParams, generate, sample
from imgread.dataset.labels import labels as class_labels
from imgread.dataset.manifest import read_manifest
from imgread.decoders import DECODERS, allocator
from imgread.errors import TrialError, UserError
from imgread.phases.dataloader import decoded_cache
from imgread.phases.dataloader.collate import POOL_SLOTS, PooledCollate, normalize_batch
from imgread.trial.run import TrialSpec, run_trial

from ...support.deaths import (
    WORKERS_FAIL_TO_START,
    assert_failed_cleanly,
    first_child,
    kill_worker,
    shm_entries,
    wait_ended,
)
from ...support.helpers import (
    HAVE_PROC,
    corrupt_keeping_size_and_mtime,
    run_trial_cli,
    segments,
    start_trial,
    wait_for_workers,
)


def loader_spec(manifest, n, workers, **params):
    cache_dir = params.pop("cache_dir", None)
    params.setdefault("batch_size", 4)
    return TrialSpec(
        str(manifest), "dataloader", "torch", n, workers, params=params, cache_dir=cache_dir
    )


@pytest.fixture(scope="module")
def cache_dir(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "simplejpeg"
    decoded_cache.build(small_dataset, "simplejpeg", out, n=10, progress=False)
    return out


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_epoch_from_jpeg_yields_every_sample_checked(small_dataset, workers, page_cache):
    before = segments()
    d = run_trial(
        loader_spec(small_dataset, 10, workers, decoder="opencv", page_cache=page_cache)
    ).to_dict()
    assert d["images"] == 10 and d["checksums_checked"] == 10
    assert d["output_pixels"] == 10 * 224 * 224
    assert d["batches"] == 3 and d["batches_per_worker_min"] == (3 // workers if workers else 3)
    assert 0 < d["first_batch_seconds"] <= d["seconds"] and d["startup_seconds"] > 0
    if page_cache == "cold":
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    else:
        assert d["resident_fraction_before"] >= 0.99
    assert d["persistent_workers"] == (workers > 0)
    assert d["pin_memory_effective"] is False and d["torch"].startswith("2.")
    if workers:
        assert d["peak_rss_workers_bytes"] > 0
    # every worker reported its start: one torch thread, the trial's allocator applied
    assert d["worker_torch_threads"] == (1 if workers else 0)
    assert d["allocator"] == "default" and d["normalize"] == "item"
    assert d["worker_allocator_settings"] == (d["allocator_settings"] if workers else "")
    assert segments() == before


def test_a_uint8_batch_normalised_is_the_per_sample_normalisation_to_the_bit():
    torch = pytest.importorskip("torch")
    u8 = np.random.default_rng(0).integers(0, 256, (4, 3, 224, 224), dtype=np.uint8)
    u8[0, 0, 0, : 256 - 32] = np.arange(256 - 32)  # every value at least once
    u8[0, 0, 1, :32] = np.arange(256 - 32, 256)
    got = normalize_batch(torch.from_numpy(u8))
    assert str(got.dtype) == "torch.float32" and tuple(got.shape) == u8.shape
    want = np.stack([decoded_cache.normalize(x) for x in u8])
    assert np.array_equal(got.numpy(), want)


def test_workers_take_the_tuned_allocator_and_one_thread_normalising_by_the_batch(
    small_dataset, tmp_path
):
    # In its own process: a tuned allocator cannot be undone in this one
    # (imgread.decoders.allocator).
    rec = tmp_path / "rec.json"
    run_trial_cli(
        small_dataset,
        rec,
        *("--phase", "dataloader", "--variant", "torch", "--n", "8", "--workers", "2"),
        *("--batch-size", "3", "--decoder", "opencv", "--allocator", "tuned"),
        *("--normalize", "batch"),
        check=True,
    )
    d = json.loads(rec.read_text())
    assert (d["allocator"], d["normalize"], d["checksums_checked"]) == ("tuned", "batch", 8)
    blocks = f"pillow blocks_max={allocator.PILLOW_BLOCKS_MAX}"
    assert d["allocator_settings"].startswith(blocks)
    assert d["worker_allocator_settings"] == d["allocator_settings"]  # every worker the same
    assert d["worker_torch_threads"] == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_pooled_batches_are_checked_and_every_batch_finds_a_free_buffer(small_dataset, workers):
    d = run_trial(
        loader_spec(
            small_dataset, 10, workers, decoder="opencv", normalize="batch", collate="pooled"
        )
    ).to_dict()
    assert d["checksums_checked"] == 10 and d["collate"] == "pooled"
    # the phase's consumer hands every buffer back: no batch of the epoch went to fresh memory
    assert d["collate_pool_misses"] == 0 and d["collate_slots"] == POOL_SLOTS
    per_slot = 4 * (3 * 224 * 224 + 8)  # batch_size 4 (loader_spec)
    assert d["collate_pool_bytes"] == per_slot * POOL_SLOTS * max(workers, 1)


class _Filled:
    """Sample i: a 3 x 4 x 4 uint8 tensor of i's value, label i."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        import torch

        return torch.full((3, 4, 4), i, dtype=torch.uint8), i


def _pooled_epochs(workers: int, epochs: int, release: bool):
    """Every batch of ``epochs`` epochs of a DataLoader over _Filled with a PooledCollate, as
    received (``release``: each handed back once its values are copied, as the phase does)."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    collate = PooledCollate(2, workers)
    loader = DataLoader(
        _Filled(),
        batch_size=2,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
    seen = []
    for _ in range(epochs):
        for batch in loader:
            seen.append((batch[0].clone(), batch[1].clone(), batch))
            if release:
                collate.release(batch)
    return collate, seen, torch


@pytest.mark.parametrize("workers", [0, 2])
def test_pooled_buffers_are_reused_once_handed_back(workers):
    collate, seen, torch = _pooled_epochs(workers, 2, release=True)
    assert len(seen) == 40 and int(collate.misses.sum()) == 0
    slots = {b[2] for _, _, b in seen}
    # every batch in one of each worker's buffers, each buffer used again and again
    assert slots <= {(w, s) for w in range(max(workers, 1)) for s in range(POOL_SLOTS)}
    assert len(slots) < len(seen)
    for k, (images, labels, _) in enumerate(seen):
        first = 2 * (k % 20)
        assert labels.tolist() == [first, first + 1]
        assert torch.equal(images[:, 0, 0, 0], torch.tensor([first, first + 1], dtype=torch.uint8))
    assert int(collate.busy.sum()) == 0  # every buffer free after the epochs


def test_a_pooled_buffer_still_held_is_never_written():
    # A consumer that keeps its batches without handing them back: each worker fills its
    # buffers, then collates into fresh memory (counted); every kept batch keeps its values.
    collate, seen, torch = _pooled_epochs(2, 1, release=False)
    assert len(seen) == 20
    assert int(collate.misses.sum()) == 20 - 2 * POOL_SLOTS  # 10 batches a worker
    assert sum(b[2] is None for _, _, b in seen) == 20 - 2 * POOL_SLOTS
    for k, (_, _, batch) in enumerate(seen):
        want = torch.arange(2 * k, 2 * k + 2, dtype=torch.uint8)
        assert batch[1].tolist() == want.tolist()
        assert torch.equal(batch[0].amin(dim=(1, 2, 3)), want)
        assert torch.equal(batch[0].amax(dim=(1, 2, 3)), want)


def test_the_decoded_cache_holds_the_decoders_crops(small_dataset, cache_dir):
    info = json.loads((cache_dir / "cache.json").read_text())
    assert info["images"] == 10 and info["decoder"] == "simplejpeg"
    assert info["npy_bytes"] == (cache_dir / "images_u8.npy").stat().st_size
    assert info["pickle_build_seconds"] >= info["npy_build_seconds"] > 0
    arr = np.load(cache_dir / "images_u8.npy", mmap_mode="r")
    assert arr.shape == (10, 3, 224, 224) and arr.dtype == np.uint8
    m = read_manifest(small_dataset)
    first = DECODERS["simplejpeg"].decode(str(m.root / m.entries[0].path), "crop224")
    assert np.array_equal(arr[0], first.transpose(2, 0, 1))
    with open(cache_dir / "tensors.pkl", "rb") as fh:
        tensors = pickle.load(fh)
    assert list(tensors) == [e.path for e in m.entries[:10]]
    t = tensors[m.entries[0].path]
    assert tuple(t.shape) == (3, 224, 224) and str(t.dtype) == "torch.float32"
    assert float(t.min()) >= -1.0 and float(t.max()) <= 1.0
    assert np.array_equal(decoded_cache.denormalize(t.numpy()), arr[0])


@pytest.mark.parametrize(
    "source,page_cache", [("cache-npy", "cold"), ("cache-npy", "warm"), ("cache-pickle", "warm")]
)
def test_epochs_from_the_cache_are_checked_against_the_decoder(
    small_dataset, cache_dir, source, page_cache
):
    d = run_trial(
        loader_spec(
            small_dataset,
            8,
            2,
            decoder="simplejpeg",
            source=source,
            page_cache=page_cache,
            cache_dir=str(cache_dir),
        )
    ).to_dict()
    assert d["checksums_checked"] == 8 and d["source"] == source
    if source == "cache-pickle":
        assert d["cache_load_seconds"] > 0 and d["bytes"] == 0
    else:
        assert d["bytes"] == 8 * 3 * 224 * 224
    if page_cache == "cold":
        assert d["resident_fraction_before"] <= 0.01


# (n, settings, the refusal); cache_dir: "cache" is the module's simplejpeg cache of 10 images,
# "gone" a folder that does not exist, None none given
REFUSED = {
    "no cache where it should be": (
        8,
        dict(decoder="simplejpeg", source="cache-npy", cache_dir="gone"),
        "no decoded cache in .*gone.*imgread cache build",
    ),
    "another decoder's cache": (
        8,
        dict(decoder="opencv", source="cache-npy", cache_dir="cache"),
        "decoded by simplejpeg; this trial needs .* by opencv",
    ),
    "more images than cached": (
        12,
        dict(decoder="simplejpeg", source="cache-npy", cache_dir="cache"),
        "caches 10 images",
    ),
    "pickle cold": (
        8,
        dict(decoder="simplejpeg", source="cache-pickle", page_cache="cold", cache_dir="cache"),
        "cache-pickle .* has no cold form",
    ),
    "no cache given": (8, dict(source="cache-npy", cache_dir=None), "needs a decoded cache"),
    "pooled by the item": (
        8,
        dict(decoder="simplejpeg", collate="pooled", cache_dir=None),
        "collate pooled .* takes normalize batch",
    ),
    "pickle by the batch": (
        8,
        dict(decoder="simplejpeg", source="cache-pickle", normalize="batch", cache_dir="cache"),
        "takes normalize item only",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_cache_that_does_not_match_is_refused(small_dataset, cache_dir, tmp_path, case):
    n, settings, message = REFUSED[case]
    folder = {"cache": str(cache_dir), "gone": str(tmp_path / "gone"), None: None}
    settings = dict(settings, cache_dir=folder[settings["cache_dir"]])
    with pytest.raises(UserError, match=message):
        run_trial(loader_spec(small_dataset, n, 0, **settings))


def test_labels_follow_the_first_folder_level_of_a_sampled_folder(tmp_path):
    src = tmp_path / "photos"
    for k, cls in enumerate(["cats", "dogs", "cats", "dogs", "birds", "cats"]):
        generate(
            src / cls / f"g{k}",
            GenerateParams(count=1, width=96, height=64, target_bytes=6000, seed=k),
            progress=False,
        )
    m = read_manifest(sample(src, tmp_path / "ds", 6, progress=False))
    labels = class_labels(m)
    sources = dict(
        line.split(",", 1) for line in (m.root / "sources.csv").read_text().splitlines()[1:]
    )
    names = {"birds": 0, "cats": 1, "dogs": 2}
    assert list(labels) == [names[sources[e.path].split("/")[0]] for e in m.entries]
    d = run_trial(loader_spec(m.root / "manifest.csv", 6, 2, batch_size=2)).to_dict()
    assert d["checksums_checked"] == 6  # labels are checked batch by batch in verify


def test_a_generated_dataset_is_one_class(small_dataset):
    assert set(class_labels(read_manifest(small_dataset))) == {0}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupted_image_fails_the_trial_naming_it(tmp_path, workers):
    ds = generate(
        tmp_path / "ds",
        GenerateParams(count=8, width=96, height=64, target_bytes=8000),
        progress=False,
    )
    m = read_manifest(ds)
    victim = m.root / m.entries[5].path
    corrupt_keeping_size_and_mtime(victim)
    with pytest.raises(TrialError) as info:
        run_trial(loader_spec(ds, 8, workers, batch_size=2))
    msg = str(info.value)
    assert f"{victim}: decoder pillow:" in msg and "no time recorded" in msg
    assert "dataloader/torch decoder=pillow source=jpeg batch_size=2" in msg
    assert "Traceback" not in msg


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_a_killed_loader_worker_fails_the_trial_and_leaves_nothing(tmp_path):
    ds = generate(
        tmp_path / "ds",
        GenerateParams(count=240, width=1600, height=1200, target_bytes=400_000),
        progress=False,
    )
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "dataloader", "--variant", "torch", "--batch-size", "4")
    proc = start_trial(ds, out, *args, "--n", "240", "--workers", "2", tmpdir=tmp)
    workers = wait_for_workers(proc, settle=1.0)  # past the warm-up epoch, into the timed one
    ended = kill_worker(proc, workers)
    cell = "dataloader/torch decoder=pillow source=jpeg batch_size=4"
    # PyTorch's words where its SIGCHLD handler raised outside the epoch, else imgread's
    assert re.search(r"(?i)killed by (SIGKILL|signal: Killed)", ended.stderr), ended.stderr
    assert_failed_cleanly(ended, proc, out, tmp, before, cell, "n=240 workers=2", "process died")


@pytest.mark.skipif(not HAVE_PROC, reason="needs Linux /proc")
def test_a_loader_worker_that_cannot_start_fails_the_trial_naming_the_cause(
    small_dataset, tmp_path
):
    out, tmp, before = tmp_path / "out" / "rec.json", tmp_path / "tmp", shm_entries()
    args = ("--phase", "dataloader", "--variant", "torch", "--n", "8", "--workers", "2")
    proc = start_trial(small_dataset, out, *args, prelude=WORKERS_FAIL_TO_START, tmpdir=tmp)
    ended = wait_ended(proc, *first_child(proc))
    cell = "dataloader/torch decoder=pillow source=jpeg batch_size=32"
    cause = "raised ImportError: no module for the decoder in this worker"
    assert_failed_cleanly(ended, proc, out, tmp, before, cell, "n=8 workers=2", cause)


def test_cli_cache_build_and_a_cached_trial(small_dataset, tmp_path):
    out = tmp_path / "cache"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgread",
            "cache",
            "build",
            "--manifest",
            str(small_dataset),
            "--decoder",
            "opencv",
            "--out",
            str(out),
            "--n",
            "6",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "6 images by opencv" in r.stdout
    rec = tmp_path / "rec.json"
    run_trial_cli(
        small_dataset,
        rec,
        "--phase",
        "dataloader",
        "--variant",
        "torch",
        "--n",
        "6",
        "--workers",
        "0",
        "--batch-size",
        "3",
        "--decoder",
        "opencv",
        "--source",
        "cache-npy",
        "--cache-dir",
        str(out),
        "--page-cache",
        "cold",
        check=True,
    )
    d = json.loads(rec.read_text())
    assert (d["workers"], d["batch_size"], d["source"], d["checksums_checked"]) == (
        0,
        "3",
        "cache-npy",
        6,
    )
