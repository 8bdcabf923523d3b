"""The code to paste (imgread.answer.snippets) on hand-made answer rows: every kind renders and
compiles, and the blocks run in a fresh interpreter on a small dataset deliver what the row
measures (count, shape, dtype, the first image's pixels against the project's decode); the
object-store rows against a local store of the same files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from imgread.answer.snippets import markdown_blocks, parse, rst_blocks, snippet, title
from imgread.phases.registry import PHASES

from ..support.snippets import blocks, check, object_store, run

LOCAL = "page_cache=warm, storage=local"
STORE = "page_cache=warm, storage=object-store"
STREAM = "fps=200, compute_ms=2, compute={}, deadline_ms=0, page_cache=warm, storage={}"
DECODERS = ["pillow", "pillow-draft", "opencv", "simplejpeg", "turbojpeg"]
CLIENTS = ["imgread", "boto3", "obstore", "s3torchconnector"]


def row(phase, variant, workers, job, settings="-"):
    return SimpleNamespace(
        phase=phase, variant=variant, workers=workers, job=job, settings=settings, dataset="t"
    )


def every_kind():
    """A row of every phase, variant, decoder, output, source and client."""
    for variant in PHASES["load"].variants:
        for storage, client in [("local", "imgread"), *[("object-store", c) for c in CLIENTS]]:
            for shards in ("0", "1"):
                job = f"storage={storage}, shard_mb={shards}"
                yield row("load", variant, 2, job, f"client={client}, in_flight=2")
    for variant in PHASES["decode"].variants:
        for d in DECODERS:
            for out in ("full", "crop224"):
                for delivery in ("discard", "pixels"):
                    job = f"output={out}, delivery={delivery}"
                    yield row("decode", variant, 2, job, f"decoder={d}, allocator=tuned")
    for variant in PHASES["dataloader"].variants:
        for storage in ("local", "object-store"):
            for source in ("jpeg", "cache-npy", "cache-pickle", "shards"):
                for client in CLIENTS:
                    yield row(
                        "dataloader",
                        variant,
                        2,
                        f"batch_size=2, page_cache=cold, storage={storage}",
                        f"decoder=opencv, source={source}, client={client}, shard_mb=1, "
                        "normalize=batch, collate=pooled, pin_memory=true, ratio=2",
                    )
    for variant in PHASES["stream"].variants:
        for compute in ("sleep", "cpu"):
            for storage in ("local", "object-store"):
                yield row("stream", variant, 2, STREAM.format(compute, storage), "prefetch=2")


def fit(r):
    """The row with each setting its variant does not take set to one it takes."""
    limits = PHASES[r.phase].variants[r.variant].allowed

    def fixed(label):
        p = parse(label)
        p = {k: (v if k not in limits or v in limits[k] else limits[k][0]) for k, v in p.items()}
        return ", ".join(f"{k}={v}" for k, v in p.items()) or "-"

    return row(r.phase, r.variant, r.workers, fixed(r.job), fixed(r.settings))


def test_every_kind_renders_and_compiles():
    rows = list({title(r): r for r in map(fit, every_kind())}.values())
    assert len(rows) > 150
    assert {(r.phase, r.variant) for r in rows} == {
        (n, v) for n in PHASES for v in PHASES[n].variants
    }
    for r in rows:
        code = snippet(r)
        compile(code, title(r), "exec")
        assert "imgread" not in code.replace("IMGREAD_", ""), title(r)  # no import of ours
        assert "amazonaws" not in code and "169.254" not in code, title(r)  # no cloud, no IMDS
        if "storage=object-store" in r.job:
            assert 'os.environ["IMGREAD_ENDPOINT"]' in code, title(r)


def test_no_block_uses_a_name_it_does_not_define_or_imports_what_it_does_not_use(tmp_path):
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    rows = list({title(r): r for r in map(fit, every_kind())}.values())
    for i, r in enumerate(rows):
        (tmp_path / f"block{i:03d}.py").write_text(f"# {title(r)}\n" + snippet(r))
    # pyflakes' checks only: undefined names, unused imports and variables, and the like
    done = subprocess.run(
        [ruff, "check", "--isolated", "--select", "F", "--ignore", "F841", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_the_blocks_are_written_under_the_table_titled_by_their_row():
    rec = pd.DataFrame(
        [vars(row("load", "threads", 4, "storage=local, shard_mb=0", "client=imgread"))]
        + [vars(row("decode", "sequential", 1, "output=full, delivery=pixels", "decoder=opencv"))]
    )
    md = markdown_blocks(rec)
    found = blocks(md)
    assert [t for t, _ in found] == [title(r) for r in rec.itertuples()]
    assert "ThreadPoolExecutor(max_workers=WORKERS)" in found[0][1] and "WORKERS = 4" in found[0][1]
    rst = rst_blocks(rec)
    assert rst.count(".. code-block:: python") == 2
    assert "   with ThreadPoolExecutor(max_workers=WORKERS) as pool:" in rst
    assert markdown_blocks(rec.iloc[:0]) == "" and parse("-") == {}
    assert parse("a=1, b=x=y") == {"a": "1", "b": "x=y"}


@pytest.fixture(scope="module")
def images(small_dataset, tmp_path_factory) -> Path:
    """Five of the small dataset's images in a folder, and one tar shard of them beside it
    (the layout of results/datasets/<name>/)."""
    root = tmp_path_factory.mktemp("snippets") / "ds"
    (root / "images").mkdir(parents=True)
    for f in sorted((small_dataset.parent / "images").glob("*.jpg"))[:5]:
        shutil.copy(f, root / "images" / f.name)
    (root / "shards" / "1mb").mkdir(parents=True)
    with tarfile.open(root / "shards" / "1mb" / "shard-000000.tar", "w") as tar:
        for i, f in enumerate(sorted((root / "images").iterdir())):
            tar.add(f, arcname=f"{i:06d}.jpg")
    return root / "images"


def run_and_check(r, images: Path, tmp_path: Path, env=None, timeout=180):
    result = run(snippet(r), images, tmp_path / "out.npz", timeout=timeout, env=env)
    check(title(r), result, sorted(images.glob("*.*")))


LIGHT = [
    *[
        row("load", v, 2, "storage=local, shard_mb=0", "in_flight=2")
        for v in PHASES["load"].variants
    ],
    row("load", "threads", 2, "storage=local, shard_mb=1"),
    *[
        row("decode", "sequential", 1, f"output={o}, delivery=pixels", f"decoder={d}")
        for d in DECODERS
        for o in ("full", "crop224")
    ],
    row("decode", "threads", 2, "output=full, delivery=discard", "decoder=pillow, allocator=tuned"),
    row("decode", "processes", 2, "output=crop224, delivery=pixels", "decoder=simplejpeg"),
    row("decode", "processes-shm", 2, "output=full, delivery=pixels", "decoder=opencv"),
    *[
        row("stream", v, 2, STREAM.format("cpu", "local"), "decoder=simplejpeg, prefetch=2")
        for v in PHASES["stream"].variants
        if v != "tf-data"
    ],
]


@pytest.mark.parametrize("r", LIGHT, ids=title)
def test_a_block_runs_and_delivers_what_its_row_measures(r, images, tmp_path):
    if "turbojpeg" in r.settings and importlib.util.find_spec("turbojpeg") is None:
        pytest.skip("PyTurboJPEG is not installed")
    run_and_check(r, images, tmp_path)


DL = "batch_size=2, " + LOCAL
# The libraries' (each import costs seconds): one row each.
HEAVY = [
    (row("dataloader", "torch", 2, DL, "decoder=opencv, source=jpeg"), "torch"),
    (
        row("dataloader", "torch", 0, DL, "decoder=simplejpeg, source=cache-npy, normalize=batch"),
        "torch",
    ),
    (row("dataloader", "torch", 1, DL, "decoder=pillow, source=shards, shard_mb=1"), "webdataset"),
    (row("dataloader", "torchvision-imagefolder", 2, DL), "torchvision"),
    (row("dataloader", "tf-data", 2, DL, "ratio=2"), "tensorflow"),
    (row("dataloader", "dali-cpu", 2, DL), "nvidia.dali"),
    (row("dataloader", "litdata", 2, DL, "shard_mb=1"), "litdata"),
]


@pytest.mark.parametrize(
    ("r", "library"), HEAVY, ids=lambda x: title(x) if hasattr(x, "job") else x
)
def test_a_library_block_runs(r, library, images, tmp_path):
    if importlib.util.find_spec(library.split(".")[0]) is None:
        pytest.skip(f"{library} is not installed")
    run_and_check(r, images, tmp_path, timeout=300)


REMOTE = [
    (row("load", "threads", 4, "storage=object-store, shard_mb=0", "client=boto3"), "boto3"),
    (row("load", "threads", 2, "storage=object-store, shard_mb=0", "client=obstore"), "obstore"),
    (row("load", "asyncio", 1, "storage=object-store, shard_mb=0", "in_flight=2"), "http"),
    (row("dataloader", "torch", 2, "batch_size=2, " + STORE, "client=boto3"), "boto3"),
    (row("dataloader", "s3torch-map", 2, "batch_size=2, " + STORE), "s3torchconnector"),
    (row("stream", "threads", 2, STREAM.format("sleep", "object-store"), "client=imgread"), "http"),
]


@pytest.mark.parametrize("case", REMOTE, ids=lambda c: title(c[0]))
def test_an_object_store_block_reads_the_store_its_user_names(case, images, tmp_path):
    r, library = case
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed")
    with object_store(images) as env:
        run_and_check(r, images, tmp_path, env=env, timeout=300)
