import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from imgread.dataset.manifest import read_manifest
from imgread.errors import CacheStateError, UserError
from imgread.instruments import page_cache

pytestmark = pytest.mark.skipif(not page_cache.residency_supported(), reason="needs Linux mincore")


def _files(manifest) -> list[Path]:
    m = read_manifest(manifest)
    return [m.root / e.path for e in m.entries]


def test_evict_then_read_moves_residency_from_zero_to_one(small_dataset):
    paths = _files(small_dataset)
    page_cache.warm(paths)
    assert page_cache.resident_fraction(paths) == 1.0
    page_cache.evict(paths)
    assert page_cache.resident_fraction(paths) <= 0.01
    for p in paths:
        p.read_bytes()
    assert page_cache.resident_fraction(paths) == 1.0


def test_evict_drops_a_freshly_written_dirty_file(tmp_path):
    p = tmp_path / "fresh.bin"
    p.write_bytes(os.urandom(4 * 1024 * 1024))
    assert page_cache.resident_fraction([p]) == 1.0
    page_cache.evict([p])
    assert page_cache.resident_fraction([p]) <= 0.01


def test_ensure_cold_records_and_ensure_warm_checks(small_dataset):
    paths = _files(small_dataset)
    assert page_cache.ensure_cold(paths, "fadvise") <= 0.01
    assert page_cache.ensure_warm(paths) == 1.0


def test_method_none_claims_nothing_and_measures_residency(small_dataset):
    paths = _files(small_dataset)
    page_cache.warm(paths)
    assert page_cache.ensure_cold(paths, "none") == 1.0  # measured, not asserted cold


def test_a_flush_that_leaves_pages_resident_fails_naming_method_and_fraction(small_dataset):
    paths = _files(small_dataset)
    page_cache.warm(paths)
    # 'saturate' with a tiny file cannot evict anything on a machine with GBs of memory.
    with pytest.raises(CacheStateError, match=r"'saturate' left 100\.0%"):
        page_cache.ensure_cold(paths, "saturate", 0.01, saturate_bytes=1 << 20)


def test_saturate_removes_its_file_and_refuses_without_room(tmp_path):
    page_cache.saturate(2 << 20, tmp_path)
    assert list(tmp_path.iterdir()) == []
    free = page_cache.shutil.disk_usage(tmp_path).free
    with pytest.raises(UserError, match="needs .* free in"):
        page_cache.saturate(free * 2, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_saturate_removes_its_file_on_an_exception(tmp_path, monkeypatch):
    def boom(fd, pos, how):
        raise KeyboardInterrupt

    monkeypatch.setattr(page_cache.os, "lseek", boom)
    with pytest.raises(KeyboardInterrupt):
        page_cache.saturate(1 << 20, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="drop_caches needs root")
def test_drop_caches_as_root_empties_the_cache(small_dataset):
    paths = _files(small_dataset)
    page_cache.warm(paths)
    assert page_cache.flush(paths, "drop_caches") <= 0.01


def test_drop_caches_without_root_is_refused_clearly(small_dataset):
    code = (
        "import os\n"
        "from imgread.instruments import page_cache\n"
        "from imgread.errors import UserError\n"
        "if os.geteuid() == 0:\n    os.seteuid(65534)  # a real non-root process from here on\n"
        "try:\n    page_cache.drop_caches()\nexcept UserError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "'drop_caches' needs root" in r.stdout, r.stderr


def test_unknown_method_and_missing_path_are_user_errors(small_dataset):
    with pytest.raises(UserError, match="unknown cache method 'cold'"):
        page_cache.flush(_files(small_dataset), "cold")
    with pytest.raises(UserError, match="no such file or folder"):
        page_cache.expand_paths([Path(tempfile.gettempdir()) / "imgread-does-not-exist"])


def test_expand_paths_accepts_manifest_folder_and_file(small_dataset):
    from_manifest = page_cache.expand_paths([small_dataset])
    assert from_manifest == _files(small_dataset)
    folder = page_cache.expand_paths([small_dataset.parent / "images"])
    assert sorted(folder) == sorted(from_manifest)
