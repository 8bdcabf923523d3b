"""The node-local copy of a dataset (imgread.dataset.stage): whole (images, manifest, labels,
shards), private (a per-user 0700 parent, owner checked without following links) and used only
after it is checked against the source; a foreign, stale or half-made copy is replaced. A
staged shard dataset serves a cold shard trial and a DataLoader trial with its labels."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from imgread.dataset import sample
from imgread.dataset import shards as shardlib
from imgread.dataset.labels import labels
from imgread.dataset.manifest import read_manifest
from imgread.dataset.stage import STAMP_NAME, copy_problem, expected_stamp, staged_manifest
from imgread.errors import UserError
from imgread.trial.run import TrialSpec, run_trial

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture(scope="module")
def classes_dataset(tmp_path_factory):
    """12 JPEGs of about 190 KB sampled from a folder of two classes (cats/, dogs/), packed
    into 1 MB shards (three of them)."""
    src = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for cls in ("cats", "dogs"):
        (src / cls).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / cls / f"{i}.jpg", quality=90)
    out = sample(src, tmp_path_factory.mktemp("ds") / "classes", 12, progress=False)
    shardlib.pack(out, 1, progress=False)
    return out


def test_a_copy_holds_everything_a_trial_reads(classes_dataset, tmp_path):
    source = read_manifest(classes_dataset)
    staged = staged_manifest(classes_dataset, str(tmp_path))
    copy = read_manifest(staged)
    parent = staged.parent.parent
    assert parent == tmp_path / f"imgread-{os.getuid()}"
    assert stat.S_IMODE(os.lstat(parent).st_mode) == 0o700
    assert copy.dataset_id == source.dataset_id
    for name in ("dataset.json", "sources.csv", "shards/1mb/shards.csv"):
        assert (copy.root / name).read_bytes() == (source.root / name).read_bytes(), name
    assert labels(copy).tolist() == labels(source).tolist()
    assert set(labels(copy).tolist()) == {0, 1}  # the two classes, not all 0
    for e in copy.entries:
        assert os.stat(copy.root / e.path).st_mtime_ns == e.mtime_ns
    assert staged_manifest(classes_dataset, str(tmp_path)) == staged  # used again, not remade


def _stage_then(tmp_path, ds, damage):
    staged = staged_manifest(ds, str(tmp_path))
    copy = staged.parent
    marker = copy / "marker"
    marker.write_text("this copy")
    damage(copy)
    stamp = expected_stamp(read_manifest(ds))
    reason = copy_problem(copy, stamp)
    again = staged_manifest(ds, str(tmp_path))
    return reason, again, marker


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda c: (c / STAMP_NAME).unlink(), "half-made"),
        (lambda c: (c / "images" / sorted(os.listdir(c / "images"))[0]).unlink(), "missing"),
        (lambda c: (c / "shards/1mb/shards.csv").write_text("{}"), "changed"),
        (
            lambda c: (c / STAMP_NAME).write_text(
                json.dumps({**json.loads((c / STAMP_NAME).read_text()), "sha256": {}})
            ),
            "stale",
        ),
    ],
    ids=["no-stamp", "image-missing", "shard-index-changed", "stale-stamp"],
)
def test_a_half_made_or_stale_copy_is_replaced_not_used(classes_dataset, tmp_path, damage, why):
    reason, again, marker = _stage_then(tmp_path, classes_dataset, damage)
    assert why in reason
    assert not marker.exists()  # the damaged copy is gone, a whole one in its place
    assert copy_problem(again.parent, expected_stamp(read_manifest(classes_dataset))) is None


@ROOT_ONLY
def test_a_copy_made_by_another_user_is_replaced(classes_dataset, tmp_path):
    reason, again, marker = _stage_then(
        tmp_path, classes_dataset, lambda c: os.chown(c, 65534, 65534)
    )
    assert reason == "made by uid 65534"
    assert not marker.exists() and os.lstat(again.parent).st_uid == os.getuid()


def test_a_link_in_place_of_the_copy_is_replaced_and_its_target_untouched(
    classes_dataset, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not yours to delete")
    ds_id = read_manifest(classes_dataset).dataset_id
    parent = tmp_path / f"imgread-{os.getuid()}"
    parent.mkdir(mode=0o700)
    os.symlink(elsewhere, parent / ds_id)
    staged = staged_manifest(classes_dataset, str(tmp_path))
    assert not os.path.islink(staged.parent)
    assert (elsewhere / "keep").read_text() == "not yours to delete"


@ROOT_ONLY
def test_a_parent_of_another_user_or_a_link_is_refused(classes_dataset, tmp_path):
    parent = tmp_path / f"imgread-{os.getuid()}"
    parent.mkdir()
    os.chown(parent, 65534, 65534)
    with pytest.raises(UserError, match="belongs to uid 65534"):
        staged_manifest(classes_dataset, str(tmp_path))
    parent.rmdir()
    os.symlink(tmp_path, parent)
    with pytest.raises(UserError, match="not a plain folder"):
        staged_manifest(classes_dataset, str(tmp_path))


def test_a_parent_open_to_others_is_made_private(classes_dataset, tmp_path):
    parent = tmp_path / f"imgread-{os.getuid()}"
    parent.mkdir()
    parent.chmod(0o777)
    staged_manifest(classes_dataset, str(tmp_path))
    assert stat.S_IMODE(os.lstat(parent).st_mode) == 0o700


def test_a_staged_shard_dataset_serves_a_cold_shard_trial_and_a_dataloader_with_labels(
    classes_dataset, tmp_path
):
    staged = str(staged_manifest(classes_dataset, str(tmp_path)))
    shards = len(shardlib.read_index(read_manifest(staged).root, 1))
    assert shards >= 2
    load = run_trial(
        TrialSpec(staged, "load", "threads", 12, 2, params={"shard_mb": "1"})
    ).to_dict()
    assert load["images"] == 12 and load["cache_state"] == "cold"
    assert load["resident_fraction_before"] <= 0.01
    assert load["shards_read"] == shards
    loader = run_trial(
        TrialSpec(staged, "dataloader", "torch", 12, 0, params={"batch_size": "4"})
    ).to_dict()
    # the phase checks every batch's labels against the manifest's (sources.csv's classes)
    assert loader["images"] == 12
