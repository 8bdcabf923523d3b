import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgread.dataset import GenerateParams, generate, sample
from imgread.dataset.manifest import read_manifest
from imgread.errors import UserError

from ..support.helpers import SMALL, tree_state


def test_generate_is_deterministic_for_a_seed(tmp_path, small_dataset):
    again = generate(tmp_path / "again", SMALL, progress=False)
    other = generate(
        tmp_path / "other", GenerateParams(**{**SMALL.__dict__, "seed": 4}), progress=False
    )
    first, second = read_manifest(small_dataset), read_manifest(again)
    assert [e.sha256 for e in first.entries] == [e.sha256 for e in second.entries]
    assert [e.path for e in first.entries] == [e.path for e in second.entries]
    assert {e.sha256 for e in read_manifest(other).entries}.isdisjoint(
        {e.sha256 for e in first.entries}
    )


def test_generated_sizes_are_within_ten_percent_of_target(small_dataset):
    m = read_manifest(small_dataset)
    sizes = np.array([e.bytes for e in m.entries])
    assert abs(sizes.mean() / SMALL.target_bytes - 1) <= 0.10
    assert np.all(np.abs(sizes / SMALL.target_bytes - 1) <= 0.10), sizes
    for e in m.entries:
        assert (m.root / e.path).stat().st_size == e.bytes
        assert hashlib.sha256((m.root / e.path).read_bytes()).hexdigest() == e.sha256


def test_generated_images_are_all_different_and_photo_like(small_dataset):
    m = read_manifest(small_dataset)
    assert len({e.sha256 for e in m.entries}) == len(m)
    pixels = [np.asarray(Image.open(m.root / e.path).convert("RGB")) for e in m.entries]
    for i in range(len(pixels)):
        assert pixels[i].shape == (SMALL.height, SMALL.width, 3)
        for j in range(i + 1, len(pixels)):
            diff = np.abs(pixels[i].astype(int) - pixels[j].astype(int)).mean()
            assert diff > 2.0, (m.entries[i].path, m.entries[j].path, diff)
    img = pixels[0].astype(float)
    assert img.std() > 20  # not flat colour
    # not white noise: neighbouring pixels are strongly correlated, as in photographs
    corr = np.corrcoef(img[:, :-1, 0].ravel(), img[:, 1:, 0].ravel())[0, 1]
    assert corr > 0.5, corr


def test_subset_of_larger_n_contains_smaller_n(small_dataset):
    m = read_manifest(small_dataset)
    assert m.subset(8)[:4] == m.subset(4)
    assert [e.order for e in m.entries] == list(range(len(m)))
    with pytest.raises(UserError, match="larger than the dataset"):
        m.subset(len(m) + 1)


def test_generate_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(UserError, match="not an imgread dataset"):
        generate(precious, SMALL, progress=False)
    assert (precious / "holiday.jpg").read_bytes() == b"mine"


def test_generate_replaces_its_own_previous_dataset_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "ds"
    generate(out, GenerateParams(**{**SMALL.__dict__, "count": 6}), progress=False)
    generate(out, GenerateParams(**{**SMALL.__dict__, "count": 3}), progress=False)
    files = sorted(p.name for p in (out / "images").iterdir())
    assert len(files) == 3 and all(f.endswith(".jpg") and not f.startswith(".") for f in files)


def _photo_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    (root / "a" / "b").mkdir(parents=True)
    for i in range(n):
        arr = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        folder = root / ("a/b" if i % 3 == 0 else "a" if i % 3 == 1 else "")
        Image.fromarray(arr).save(folder / f"photo {i}.JPG", quality=90)
    return root


def test_sample_copies_a_seeded_sample_and_leaves_the_source_untouched(tmp_path):
    src = _photo_folder(tmp_path / "src", 9)
    before = tree_state(src)
    manifest = sample(src, tmp_path / "out", count=5, seed=7, progress=False)
    again = sample(src, tmp_path / "out2", count=5, seed=7, progress=False)
    assert tree_state(src) == before
    m = read_manifest(manifest)
    assert len(m) == 5
    source_digests = {v[0] for v in before.values() if v[0]}
    assert {e.sha256 for e in m.entries} <= source_digests
    assert [e.sha256 for e in m.entries] == [e.sha256 for e in read_manifest(again).entries]
    assert all((m.root / e.path).is_file() and e.width == 60 and e.height == 40 for e in m.entries)


def test_sample_rejects_missing_or_empty_source(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        sample(tmp_path / "nope", tmp_path / "out", count=1, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        sample(tmp_path / "empty", tmp_path / "out", count=1, progress=False)


def test_sample_fails_when_too_few_valid_images(tmp_path):
    src = _photo_folder(tmp_path / "src", 3)
    with pytest.raises(UserError, match="found 3 valid images, fewer than the 5"):
        sample(src, tmp_path / "out", count=5, progress=False)
    assert not os.path.exists(tmp_path / "out" / "manifest.csv")
