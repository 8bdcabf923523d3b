"""The data as ML users have it: the generator's sizes and encodings, tar shards (round trip,
determinism, bad shards), the webdataset source of the DataLoader (exactly n samples per
epoch across workers), and the datasets list of a config (old form, checks)."""

import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from imgread.dataset import GenerateParams, generate
from imgread.dataset import shards as shardlib
from imgread.dataset.manifest import read_manifest
from imgread.decoders import format_of
from imgread.errors import UserError, VerificationError
from imgread.plan.grid import normalize_datasets


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    """40 images around 400 x 300 (+-25 %), about 60 KB, JPEG: 3 shards of 1 MB."""
    params = GenerateParams(count=40, width=400, height=300, target_bytes=60_000, size_spread=0.25)
    return generate(tmp_path_factory.mktemp("spread") / "ds", params, progress=False)


def test_sizes_are_drawn_around_the_asked_size_within_the_spread(spread):
    m = read_manifest(spread)
    widths = np.array([e.width for e in m.entries])
    heights = np.array([e.height for e in m.entries])
    assert widths.min() >= 400 * 0.75 - 2 and widths.max() <= 400 * 1.25
    assert heights.min() >= 300 * 0.75 - 2 and heights.max() <= 300 * 1.25
    assert len(set(zip(widths, heights, strict=True))) > 30  # drawn, not one size
    for e in m.entries[:5]:
        with Image.open(m.root / e.path) as img:
            assert img.size == (e.width, e.height)


@pytest.mark.parametrize(
    "settings, fmt",
    [
        ({"format": "png"}, "png"),
        ({"format": "webp", "quality": 80}, "webp"),
        ({"quality": 75, "subsampling": "4:4:4"}, "jpeg"),
        ({"quality": 90, "progressive": True}, "jpeg"),
    ],
)
def test_each_encoding_is_written_as_asked(tmp_path, settings, fmt):
    params = GenerateParams(count=3, width=96, height=64, **settings)
    m = read_manifest(generate(tmp_path / "ds", params, progress=False))
    for e in m.entries:
        data = (m.root / e.path).read_bytes()
        assert format_of(data) == fmt
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (96, 64)
            if fmt == "jpeg":
                assert img.info.get("progressive", 0) == int(settings.get("progressive", False))
                # Pillow's JPEG plugin: 0 = 4:4:4, 2 = 4:2:0
                from PIL import JpegImagePlugin

                want = 0 if settings.get("subsampling") == "4:4:4" else 2
                assert JpegImagePlugin.get_sampling(img) == want


def test_a_bad_encoding_is_refused_naming_the_field(tmp_path):
    with pytest.raises(UserError, match="--subsampling must be one of"):
        generate(tmp_path / "x", GenerateParams(count=1, subsampling="4:1:1"), progress=False)
    with pytest.raises(UserError, match="--format must be one of"):
        generate(tmp_path / "y", GenerateParams(count=1, format="gif"), progress=False)


def test_shards_round_trip_every_image_byte_for_byte(spread):
    path = shardlib.pack(spread, 1, progress=False)
    m = read_manifest(spread)
    shards = shardlib.read_index(m.root, 1, m.dataset_id)
    assert path == shardlib.index_path(m.root, 1)
    assert len(shards) > 1 and sum(s.count for s in shards) == len(m)
    got = {}
    for s in shards:
        data = (m.root / s.path).read_bytes()
        assert len(data) == s.bytes <= 1_000_000
        assert hashlib.sha256(data).hexdigest() == s.sha256
        for order, body, label in shardlib.split(s, data):
            got[order] = body
            assert label == 0
    assert sorted(got) == list(range(len(m)))
    for e in m.entries:
        assert got[e.order] == (m.root / e.path).read_bytes()
    # the WebDataset convention: key.jpg and key.cls, in the dataset's order
    with tarfile.open(m.root / shards[0].path) as tar:
        assert tar.getnames()[:2] == ["000000.jpg", "000000.cls"]


def test_packing_is_deterministic(spread):
    shardlib.pack(spread, 1, progress=False)
    first = [s.sha256 for s in shardlib.read_index(spread.parent, 1)]
    shardlib.pack(spread, 1, progress=False)
    assert [s.sha256 for s in shardlib.read_index(spread.parent, 1)] == first


def test_a_shard_smaller_than_one_image_is_refused(tmp_path):
    params = GenerateParams(count=2, width=1200, height=900, target_bytes=1_200_000)
    manifest = generate(tmp_path / "big", params, progress=False)
    with pytest.raises(UserError, match="shard size 1 MB is smaller than one image"):
        shardlib.pack(manifest, 1, progress=False)


def test_missing_truncated_or_stale_shards_say_so(spread, tmp_path):
    m = read_manifest(spread)
    with pytest.raises(UserError, match="no 7 MB shards"):
        shardlib.read_index(m.root, 7)
    shardlib.pack(spread, 1, progress=False)
    shard = shardlib.read_index(m.root, 1)[0]
    data = (m.root / shard.path).read_bytes()
    with pytest.raises(VerificationError, match="read .* bytes, the shard index says"):
        shardlib.split(shard, data[: len(data) // 2])
    garbled = shardlib.Shard(**{**shard.__dict__, "bytes": len(data) // 2})
    with pytest.raises(VerificationError, match="not a readable tar|images and"):
        shardlib.split(garbled, data[: len(data) // 2])
    with pytest.raises(UserError, match="packed from another version"):
        shardlib.read_index(m.root, 1, dataset_id="something-else")


def test_the_webdataset_source_yields_each_of_n_samples_once_across_workers(spread):
    """Two DataLoader workers, shards split between them, shuffled: every one of the first n
    images exactly once per epoch (n short of the last shard: the rest are dropped), two
    epochs in a row with persistent workers."""
    from torch.utils.data import DataLoader

    from imgread.phases.dataloader.shards import ShardSamples, shard_urls

    shardlib.pack(spread, 1, progress=False)
    m = read_manifest(spread)
    n = len(m) - 2
    urls = shard_urls(m.root, 1, n, m.dataset_id)
    assert len(urls) >= 2
    source = ShardSamples(urls, n, "simplejpeg", shuffle_buffer=8)
    loader = DataLoader(source.pipeline(), batch_size=4, num_workers=2, persistent_workers=True)
    try:
        for _ in range(2):
            keys = [k for _, _, ks in loader for k in ks.tolist()]
            assert sorted(keys) == list(range(n))
            assert keys != list(range(n))  # shuffled
        source.limit.value = 2  # the warm-up's plan: the first two shards only
        keys = [k for _, _, ks in loader for k in ks.tolist()]
        held = sum(s.count for s in shardlib.read_index(m.root, 1)[:2])
        assert sorted(keys) == list(range(held))
    finally:
        del loader


def test_an_old_single_dataset_is_read_as_the_first_of_the_list():
    config = {
        "dataset": {"source": "/photos"},
        "datasets": [{"name": "a", "count": 9}, {"name": "b", "count": 4}],
    }
    line = normalize_datasets(config)
    assert "read as the first of 'datasets'" in line
    assert config["datasets"] == [
        {"name": "a", "count": 9, "source": "/photos"},
        {"name": "b", "count": 4},
    ]
    assert "dataset" not in config
    assert normalize_datasets({"datasets": [{"name": "a"}]}) is None
    with pytest.raises(UserError, match="config 'dataset': expected a mapping"):
        normalize_datasets({"dataset": "photos"})
