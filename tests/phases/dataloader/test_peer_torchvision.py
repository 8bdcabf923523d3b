"""The torchvision pipelines of the DataLoader phase (torchvision-imagefolder, torchvision-io):
real trials, real DataLoader workers; ImageFolder's class-folder view; the check after the clock
failing on a broken epoch."""

from __future__ import annotations

import os

import numpy as np
import pytest

from imgread.dataset import GenerateParams, generate, sample
from imgread.dataset.labels import labels as class_labels
from imgread.dataset.manifest import read_manifest
from imgread.errors import VerificationError
from imgread.phases.dataloader.pipelines.check import MAE_LIMIT, verify_peer
from imgread.phases.dataloader.pipelines.torchvision_imagefolder import view_folder
from imgread.phases.registry import get_phase
from imgread.trial.run import TrialSpec, run_trial

from ...support.helpers import SMALL, segments

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

VARIANTS = ("torchvision-imagefolder", "torchvision-io")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The small dataset's 12 images, in a folder of this module's own (ImageFolder's trials
    write their view into the dataset's folder)."""
    return generate(tmp_path_factory.mktemp("tv") / "ds", SMALL, progress=False)


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """A sampled dataset of 6 images in 2 class folders (cats 0, dogs 1); 320 x 240, as an
    image upscaled 4 times (96 x 64) differs from the reference's INTER_AREA by 8 levels."""
    tmp = tmp_path_factory.mktemp("tv2")
    for k, cls in enumerate(["cats", "dogs", "dogs", "cats", "dogs", "cats"]):
        generate(
            tmp / "photos" / cls / f"g{k}",
            GenerateParams(count=1, width=320, height=240, target_bytes=20_000, seed=k),
            progress=False,
        )
    return sample(tmp / "photos", tmp / "ds", 6, progress=False)


def spec(manifest, variant, n, workers, **params):
    params.setdefault("batch_size", 4)
    return TrialSpec(str(manifest), "dataloader", variant, n, workers, params=params)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("page_cache", ["cold", "warm"])
def test_an_epoch_is_every_sample_checked_with_its_columns(dataset, variant, workers, page_cache):
    before = segments()
    d = run_trial(spec(dataset, variant, 10, workers, page_cache=page_cache)).to_dict()
    assert d["images"] == 10 and d["samples_unique"] == 10 and d["output_pixels"] == 10 * 224**2
    assert d["batches"] == 3 and 0 < d["first_batch_seconds"] <= d["seconds"]
    if page_cache == "cold":
        assert d["resident_fraction_before"] <= 0.01 and d["cache_state"] == "cold"
    else:
        assert d["resident_fraction_before"] >= 0.99
    assert d["pixel_mae_max"] <= 1.0 and d["pixel_mae_limit"] == MAE_LIMIT  # measured: 0.45
    assert d["torch"].startswith("2.") and d["torchvision"].startswith("0.")
    assert (
        d["pipeline_versions"].startswith("torch==") and "torchvision==" in d["pipeline_versions"]
    )
    assert d["pipeline_decoder"] and "Normalize" in d["pipeline_transform"]
    assert d["pin_memory_effective"] is False and d["persistent_workers"] == (workers > 0)
    assert d["torch_threads"] == 1 and d["worker_torch_threads"] == (1 if workers else 0)
    assert (d["peak_rss_workers_bytes"] > 0) == (workers > 0)
    assert "cache_load_seconds" not in d
    if variant == "torchvision-imagefolder":
        assert d["imagefolder_view"] in ("made", "reused") and d["imagefolder_view_seconds"] >= 0
    assert segments() == before


def test_the_view_is_made_once_reused_and_links_to_the_cache_files(tmp_path):
    manifest = generate(tmp_path / "ds", SMALL, progress=False)
    phase = get_phase("dataloader")
    ctx = phase.context(manifest, 8, "torchvision-imagefolder", 0, {"batch_size": "4"})
    folder = view_folder(ctx)
    states = [
        run_trial(spec(manifest, "torchvision-imagefolder", 8, 0)).to_dict()["imagefolder_view"]
        for _ in range(2)
    ]
    assert states == ["made", "reused"]
    links = sorted(p for p in folder.rglob("*.jpg"))
    assert len(links) == 8 and all(p.is_symlink() for p in links)
    # the files ImageFolder opens are the phase's cache files, the ones a cold trial evicts
    targets = {os.path.realpath(p) for p in links}
    assert targets == {os.path.realpath(p) for p in phase.cache_files(ctx)}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    links[0].unlink()  # incomplete: made again, in place
    assert (
        run_trial(spec(manifest, "torchvision-imagefolder", 8, 0)).to_dict()["imagefolder_view"]
        == "made"
    )
    assert len(list(folder.rglob("*.jpg"))) == 8
    # another count is another view
    run_trial(spec(manifest, "torchvision-imagefolder", 4, 0))
    assert len(list((folder.parent / "n4").rglob("*.jpg"))) == 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_labels_of_a_sampled_dataset_with_two_classes(two_classes, variant):
    m = read_manifest(two_classes)
    labels = class_labels(m)
    assert set(labels) == {0, 1}
    d = run_trial(spec(two_classes, variant, 6, 2, batch_size=2)).to_dict()
    assert d["images"] == 6  # labels checked sample by sample against the manifest's
    if variant == "torchvision-imagefolder":
        folder = view_folder(get_phase("dataloader").context(two_classes, 6, variant))
        by_class = {c.name: len(list(c.iterdir())) for c in folder.iterdir() if c.is_dir()}
        assert by_class == {"0": int((labels == 0).sum()), "1": int((labels == 1).sum())}


def test_imagefolder_reads_local_files_only():
    phase = get_phase("dataloader")
    params = phase.resolve({"storage": "http"})
    assert "storage local" in phase.unsupported("torchvision-imagefolder", params)
    assert phase.unsupported("torchvision-io", params) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_check_fails_on_a_broken_epoch(dataset, variant):
    phase = get_phase("dataloader")
    ctx = phase.context(dataset, 6, variant, 0, {"batch_size": "4"})
    runner = phase.start(ctx)
    try:
        batches = runner.run(list(ctx.jobs))
    finally:
        runner.close()
    assert verify_peer(ctx, batches, variant).images == 6
    (x0, y0, k0), (x1, y1, k1) = batches
    dropped = [(x0, y0, k0), (x1[:1], y1[:1], k1[:1])]
    with pytest.raises(VerificationError, match="1 never"):
        verify_peer(ctx, dropped, variant)
    wrapped = [(x0, y0, k0), (np.concatenate([x1, x0[:2]]), [*y1, *y0[:2]], [*k1, *k0[:2]])]
    with pytest.raises(VerificationError, match="more than once"):
        verify_peer(ctx, wrapped, variant)
    shuffled = [(x0, y0, np.roll(np.asarray(k0), 1)), (x1, y1, k1)]
    with pytest.raises(VerificationError, match="differs from the reference"):
        verify_peer(ctx, shuffled, variant)
    with pytest.raises(VerificationError, match="float32"):
        verify_peer(ctx, [((x0 * 127.5 + 127.5).to(torch.uint8), y0, k0)], variant)
