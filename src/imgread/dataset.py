"""Datasets: a deterministic synthetic JPEG set, or a sample of a user's own images.

Both write ``manifest.csv`` (see :mod:`imgread.manifest`) in a fixed shuffled order, so the
subset of n images is the first n rows and a larger n contains every image of a smaller n.

Generation is built to cost little more than the JPEG encoding itself: a few photo-like
textures are synthesised once, and every image is a zero-copy view into one of them (a
distinct crop offset, colour variant and vertical orientation), handed straight to the encoder.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import mmap
import multiprocessing as mp
import os
import shutil
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from imgread.errors import UserError
from imgread.manifest import MANIFEST_NAME, ImageEntry, write_manifest
from imgread.util import Progress, atomic_path, write_bytes_atomic, write_text_atomic

INFO_NAME = "dataset.json"  # marks a folder as an imgread dataset (ours to overwrite)
SKIPPED_NAME = "skipped.csv"
IMAGES_DIR = "images"
SOURCES_NAME = "sources.csv"  # sampled datasets: each image's path in the user's folder

DEFAULT_COUNT = 900
DEFAULT_WIDTH = 4032
DEFAULT_HEIGHT = 3024
DEFAULT_TARGET_BYTES = 4_000_000
DEFAULT_SEED = 0
SIZE_TOLERANCE = 0.10

N_TEXTURES = 4
N_COLOURS = 4
GRAIN_TILE = 509  # prime
OFFSET_STEP = 8  # crop offsets on an 8-px grid: neighbouring images differ by whole blocks


@dataclass(frozen=True)
class GenerateParams:
    """What :func:`generate` makes; stored in dataset.json."""

    count: int = DEFAULT_COUNT
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    target_bytes: int = DEFAULT_TARGET_BYTES
    seed: int = DEFAULT_SEED

    def check(self) -> None:
        """Raise UserError naming the first out-of-range field."""
        if self.count < 1:
            raise UserError(f"--count must be at least 1, got {self.count}")
        if self.width < 16 or self.height < 16:
            raise UserError(
                f"--width/--height must be at least 16 px, got {self.width}x{self.height}"
            )
        if self.target_bytes < 1000:
            raise UserError(f"--target-bytes must be at least 1000, got {self.target_bytes}")
        if self.seed < 0:
            raise UserError(f"--seed must be non-negative, got {self.seed}")


# --------------------------------------------------------------------------- output folder


def prepare_out_dir(out: Path) -> None:
    """Make ``out`` ready for a new dataset without ever touching a folder that is not ours.

    An empty or missing folder is used as is; a previous imgread dataset (it has dataset.json)
    is replaced; anything else is refused, so a mistyped --out cannot delete a user's files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / INFO_NAME).is_file():
            raise UserError(
                f"--out {out} is not empty and is not an imgread dataset (no {INFO_NAME}); "
                "choose an empty or new folder"
            )
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # first: the old set is no longer valid
        (out / SKIPPED_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)


def _shuffled_order(count: int, seed: int) -> np.ndarray:
    """order[k] = the index of the image at position k of the fixed shuffled order."""
    return np.random.default_rng([seed, 0x5EED]).permutation(count)


# --------------------------------------------------------------------------- textures


def _pink_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A zero-mean, unit-variance field with a 1/f amplitude spectrum (like natural images)."""
    spectrum = np.fft.rfft2(rng.standard_normal((h, w), dtype=np.float32))
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    spectrum /= radius
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-9
    return field


def make_texture(seed: int, index: int, width: int, height: int) -> np.ndarray:
    """One photo-like RGB texture (height x width x 3, uint8): 1/f colour field, edges, grain."""
    return np.asarray(_texture_image(seed, index, width, height))


def _texture_image(seed: int, index: int, width: int, height: int) -> Image.Image:
    """:func:`make_texture` as a Pillow image.

    The low-frequency field is synthesised at a quarter of the size and upscaled (1/f content
    is scale-free); hard-edged shapes add the edges; per-pixel luminance and chroma grain add
    the fine detail that makes a JPEG of a photo cost what it costs to decode.
    """
    rng = np.random.default_rng([seed, index, 0x7E47])
    h, w = max(height // 4, 8), max(width // 4, 8)
    mix = (
        rng.normal(size=(3, 3)).astype(np.float32) * 0.35 + np.eye(3, dtype=np.float32) * 0.6 + 0.45
    )
    fields = np.stack([_pink_field(rng, h, w) for _ in range(3)], axis=-1) @ mix.T
    low = np.clip(128 + 42 * fields, 0, 255).astype(np.uint8)
    img = Image.fromarray(low, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(max(width // 40, 2), max(width // 6, 3)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        points = [
            (int(x0 + rng.normal() * size), int(y0 + rng.normal() * size))
            for _ in range(int(rng.integers(3, 7)))
        ]
        if rng.random() < 0.6:
            draw.polygon(points, fill=colour)
        else:
            draw.line(points, fill=colour, width=int(rng.integers(2, 12)))
    # Sensor-like grain: luminance plus weaker chroma noise, drawn as a prime-sized tile
    # (cheap, and never aligned with the 8x8 JPEG blocks) and repeated over the texture.
    tile = GRAIN_TILE
    grain = rng.standard_normal((tile, tile, 1), dtype=np.float32) * 6.0
    grain = grain + rng.standard_normal((tile, tile, 3), dtype=np.float32) * 3.0
    grain_tile = Image.fromarray(np.clip(np.round(grain) + 128, 0, 255).astype(np.uint8), "RGB")
    grain_full = Image.new("RGB", (width, height))
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            grain_full.paste(grain_tile, (x, y))
    # a + (grain + 128) - 128, clipped to 0..255, in C
    return ImageChops.add(img, grain_full, scale=1.0, offset=-128)


def _colour_luts(seed: int, texture: int) -> list[np.ndarray]:
    """N_COLOURS per-channel lookup tables (3 x 256): identity first, then gain/offset/gamma."""
    rng = np.random.default_rng([seed, texture, 0xC0102])
    values = np.arange(256, dtype=np.float32) / 255.0
    luts = [np.tile(np.arange(256, dtype=np.uint8), (3, 1))]
    for _ in range(N_COLOURS - 1):
        gain = rng.uniform(0.9, 1.1, 3)
        offset = rng.uniform(-0.06, 0.06, 3)
        gamma = rng.uniform(0.85, 1.15, 3)
        lut = [(np.clip(values ** gamma[c] * gain[c] + offset[c], 0, 1) * 255) for c in range(3)]
        luts.append(np.round(np.stack(lut)).astype(np.uint8))
    return luts


# --------------------------------------------------------------------------- generation workers

_BASES: list[np.ndarray] = []  # RGBX arrays, set in each worker (inherited by fork)


def _init_worker(bases: list[np.ndarray]) -> None:
    global _BASES
    _BASES = bases


@dataclass(frozen=True)
class _Variant:
    base: int  # index into _BASES
    dx: int
    dy: int
    flip: bool


def _view(v: _Variant, width: int, height: int) -> Image.Image:
    """A zero-copy RGBX image of one crop of one base (flipped vertically if asked)."""
    base = _BASES[v.base]
    stride = base.shape[1] * 4
    offset = v.dy * stride + v.dx * 4
    buf = base.data.cast("B")[offset:]
    return Image.frombuffer(
        "RGBX", (width, height), buf, "raw", "RGBX", stride, -1 if v.flip else 1
    )


def _encode(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _make_one(args) -> tuple[int, str, int, int, int, str, int, int]:
    index, variant, width, height, quality, target, out_dir = args
    img = _view(variant, width, height)
    data = _encode(img, quality)
    # A size outside the tolerance is re-encoded at a nudged quality (rare; bounded tries).
    for _ in range(4):
        ratio = len(data) / target
        if abs(ratio - 1) <= SIZE_TOLERANCE * 0.95:
            break
        quality = int(np.clip(quality + (-2 if ratio > 1 else 2), 1, 100))
        data = _encode(img, quality)
    rel = f"{IMAGES_DIR}/img_{index:05d}.jpg"
    dest = Path(out_dir) / rel
    _write_image(dest, data)
    mtime_ns = os.stat(dest).st_mtime_ns
    return (
        index,
        rel,
        len(data),
        width,
        height,
        hashlib.sha256(data).hexdigest(),
        mtime_ns,
        quality,
    )


def _write_image(dest: Path, data: bytes) -> None:
    """Write one image atomically; an OSError names the image (a full disk often does not)."""
    try:
        write_bytes_atomic(dest, data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from None


def _mp_context():
    # fork shares the texture arrays with the workers for free; elsewhere they are pickled.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else methods[0])


def _texture_job(args) -> int:
    """Synthesise texture ``t`` and write its N_COLOURS RGBX colour variants into the bases."""
    seed, t, width, height = args
    rgb = _texture_image(seed, t, width, height)
    for k, lut in enumerate(_colour_luts(seed, t)):
        rgbx = rgb.point(lut.ravel().tolist()).convert("RGBX").tobytes()
        _BASES[t * N_COLOURS + k].reshape(-1)[:] = np.frombuffer(rgbx, dtype=np.uint8)
    return t


def _calibrate_quality(variants: list[_Variant], width: int, height: int, target: int) -> int:
    """The JPEG quality whose mean size over a few sample images is closest to ``target``.

    Measured on centre crops of a quarter of the area (the textures are stationary, so size
    scales with area) to keep calibration a small part of generation.
    """
    box = (width // 4, height // 4, width // 4 + width // 2, height // 4 + height // 2)
    samples = [_view(v, width, height).crop(box) for v in variants[:3]]
    scaled_target = target * (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    lo, hi, best = 1, 100, None

    def mean_size(q: int) -> float:
        return float(np.mean([len(_encode(img, q)) for img in samples]))

    while lo <= hi:  # size grows with quality: bisect
        mid = (lo + hi) // 2
        size = mean_size(mid)
        if best is None or abs(size - scaled_target) < abs(best[1] - scaled_target):
            best = (mid, size)
        if size < scaled_target:
            lo = mid + 1
        else:
            hi = mid - 1
    return best[0]


def generate(
    out: str | os.PathLike,
    params: GenerateParams = GenerateParams(),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate a deterministic synthetic JPEG dataset in ``out``; return the manifest path."""
    params.check()
    out = Path(out)
    prepare_out_dir(out)
    workers = workers or os.cpu_count() or 1
    w, h = params.width, params.height
    margin_x, margin_y = max(w // 16, 16), max(h // 16, 16)
    tw, th = w + margin_x, h + margin_y
    write_text_atomic(
        out / INFO_NAME,
        json.dumps({"kind": "generated", "complete": False, **params.__dict__}, indent=2),
    )
    # The bases live in one shared anonymous mapping made before the pool forks: the workers
    # synthesise them in parallel and read them back for encoding, with nothing pickled.
    n_bases = N_TEXTURES * N_COLOURS
    slot = th * tw * 4
    shared = mmap.mmap(-1, n_bases * slot)
    bases = [
        np.frombuffer(shared, dtype=np.uint8, count=slot, offset=k * slot).reshape(th, tw, 4)
        for k in range(n_bases)
    ]
    _init_worker(bases)
    ctx = _mp_context()
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        if ctx.get_start_method() == "fork" and workers > 1
        else None
    )
    try:
        manifest = _generate_with(pool, out, params, bases, w, h, tw - w, th - h, progress)
    except OSError as exc:
        raise _write_failed(exc, out) from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        del bases
        _init_worker([])
    return manifest


def _generate_with(pool, out, params, bases, w, h, margin_x, margin_y, progress) -> Path:
    run = pool.map if pool is not None else map
    list(
        run(_texture_job, [(params.seed, t, w + margin_x, h + margin_y) for t in range(N_TEXTURES)])
    )

    # Every image gets a distinct (base, offset, flip): distinct by construction.
    # Exclusive of the margin: a view must have stride x height bytes after its start.
    offsets_x = range(0, margin_x, OFFSET_STEP)
    offsets_y = range(0, margin_y, OFFSET_STEP)
    n_cells = len(bases) * len(offsets_x) * len(offsets_y) * 2
    if params.count > n_cells:
        raise UserError(
            f"--count {params.count} is more than the {n_cells} distinct images this size allows; "
            "use a larger --width/--height"
        )
    rng = np.random.default_rng([params.seed, 0xCE11])
    cells = rng.choice(n_cells, size=params.count, replace=False)
    variants = []
    for cell in cells:
        cell = int(cell)
        flip, cell = cell % 2, cell // 2
        iy, cell = cell % len(offsets_y), cell // len(offsets_y)
        ix, base = cell % len(offsets_x), cell // len(offsets_x)
        variants.append(_Variant(base, offsets_x[ix], offsets_y[iy], bool(flip)))

    quality = _calibrate_quality(variants, w, h, params.target_bytes)
    jobs = [
        (i, variants[i], w, h, quality, params.target_bytes, str(out)) for i in range(params.count)
    ]
    order = _shuffled_order(params.count, params.seed)
    position = {int(img): pos for pos, img in enumerate(order)}
    entries: list[ImageEntry] = []
    qualities = []
    bar = Progress(params.count, f"generate {out}", enabled=progress)
    results = pool.map(_make_one, jobs, chunksize=4) if pool is not None else map(_make_one, jobs)
    for index, rel, nbytes, width, height, digest, mtime_ns, q in results:
        entries.append(ImageEntry(position[index], rel, nbytes, width, height, digest, mtime_ns))
        qualities.append(q)
        bar.update()
    manifest = write_manifest(out, entries)
    sizes = np.array([e.bytes for e in entries])
    write_text_atomic(
        out / INFO_NAME,
        json.dumps(
            {
                "kind": "generated",
                "complete": True,
                **params.__dict__,
                "jpeg_quality": quality,
                "jpeg_quality_range": [min(qualities), max(qualities)],
                "mean_bytes": float(sizes.mean()),
                "min_bytes": int(sizes.min()),
                "max_bytes": int(sizes.max()),
            },
            indent=2,
        ),
    )
    return manifest


def _write_failed(exc: OSError, out: Path) -> UserError:
    where = exc.filename or out
    hint = "free some space or choose another --out" if exc.errno == errno.ENOSPC else ""
    return UserError(
        f"could not write {where}: {exc.strerror or exc}" + (f"; {hint}" if hint else "")
    )


# --------------------------------------------------------------------------- sampling

CANDIDATE_EXTENSIONS = (".jpg", ".jpeg")


def find_candidates(source: Path, include_png: bool = False) -> list[Path]:
    """Image files under ``source`` (recursive, symlinked folders not followed), sorted."""
    exts = CANDIDATE_EXTENSIONS + ((".png",) if include_png else ())
    found = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts):
                found.append(Path(dirpath) / name)
    return found


def _validate(data: bytes) -> tuple[int, int] | str:
    """Decode ``data`` fully; return (width, height), or the reason it cannot be read."""
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
            return rgb.size
    except Exception as exc:  # Pillow raises many types for bad files; each is a reason to skip
        return f"{type(exc).__name__}: {exc}"


def sample(
    source: str | os.PathLike,
    out: str | os.PathLike,
    count: int,
    seed: int = DEFAULT_SEED,
    include_png: bool = False,
    on_invalid: str = "skip",
    progress: bool = True,
) -> Path:
    """Copy ``count`` valid images chosen by ``seed`` from ``source`` into ``out``.

    The source folder is only read. Candidates are visited in a seeded shuffled order; each is
    read once, decoded once to prove it is valid, and its bytes copied. Files that cannot be
    read are listed in skipped.csv (and on stderr); ``on_invalid='fail'`` makes any an error.
    """
    source = Path(source)
    out = Path(out)
    if on_invalid not in ("skip", "fail"):
        raise UserError(f"on_invalid must be 'skip' or 'fail', got {on_invalid!r}")
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    if not source.is_dir():
        raise UserError(f"--source {source} is not a folder")
    src_real, out_real = source.resolve(), out.resolve()
    if out_real == src_real or src_real in out_real.parents or out_real in src_real.parents:
        raise UserError(f"--out {out} must not be inside --source {source} (or contain it)")
    candidates = find_candidates(source, include_png)
    if not candidates:
        exts = ", ".join(CANDIDATE_EXTENSIONS + ((".png",) if include_png else ()))
        raise UserError(f"--source {source} holds no images ({exts}, searched recursively)")
    prepare_out_dir(out)
    write_text_atomic(
        out / INFO_NAME,
        json.dumps({"kind": "sampled", "complete": False, "source": str(src_real)}, indent=2),
    )
    rng = np.random.default_rng([seed, 0x5A3])
    visit = [candidates[i] for i in rng.permutation(len(candidates))]
    entries: list[ImageEntry] = []
    skipped: list[tuple[str, str]] = []
    sources: list[tuple[str, str]] = []
    seen_real: set[Path] = set()
    bar = Progress(count, f"sample {source}", enabled=progress)
    for path in visit:
        if len(entries) == count:
            break
        rel_src = str(path.relative_to(source))
        real = Path(os.path.realpath(path))  # never raises, even on a symlink loop
        if real in seen_real:
            skipped.append((rel_src, "duplicate of another candidate (symlink)"))
            continue
        seen_real.add(real)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            result: tuple[int, int] | str = f"cannot read: {exc.strerror or exc}"
        else:
            result = _validate(data)
        if isinstance(result, str):
            skipped.append((rel_src, result))
            print(f"imgread: skipped {path}: {result}", file=sys.stderr)
            if on_invalid == "fail":
                _write_skipped(out, skipped)
                raise UserError(
                    f"invalid image {path}: {result} "
                    "(on_invalid=fail; use skip to ignore such files)"
                )
            continue
        k = len(entries)
        rel = f"{IMAGES_DIR}/{k:05d}{path.suffix.lower()}"
        dest = out / rel
        try:
            _write_image(dest, data)
        except OSError as exc:
            raise _write_failed(exc, out) from None
        width, height = result
        sources.append((rel, rel_src))
        entries.append(
            ImageEntry(
                k,
                rel,
                len(data),
                width,
                height,
                hashlib.sha256(data).hexdigest(),
                os.stat(dest).st_mtime_ns,
            )
        )
        bar.update()
    _write_skipped(out, skipped)
    if len(entries) < count:
        raise UserError(
            f"--source {source}: found {len(entries)} valid images, fewer than the {count} asked "
            f"for ({len(skipped)} skipped, listed in {out / SKIPPED_NAME})"
        )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("path", "source"), *sources])
    write_text_atomic(out / SOURCES_NAME, buf.getvalue())
    manifest = write_manifest(out, entries)
    write_text_atomic(
        out / INFO_NAME,
        json.dumps(
            {
                "kind": "sampled",
                "complete": True,
                "source": str(src_real),
                "count": count,
                "seed": seed,
                "include_png": include_png,
                "skipped": len(skipped),
            },
            indent=2,
        ),
    )
    return manifest


def _write_skipped(out: Path, skipped: Iterable[tuple[str, str]]) -> None:
    with atomic_path(out / SKIPPED_NAME) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["source_path", "reason"])
            writer.writerows(skipped)


def verify_hashes(manifest_path: str | os.PathLike, progress: bool = True) -> int:
    """Check every file's size and sha256 against the manifest; return the files checked."""
    from imgread.manifest import read_manifest

    m = read_manifest(manifest_path)
    bar = Progress(len(m), f"verify {m.root}", enabled=progress)
    for e in m.entries:
        path = m.root / e.path
        try:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except FileNotFoundError:
            raise UserError(f"dataset file missing: {path} (listed in the manifest)") from None
        if digest != e.sha256:
            raise UserError(
                f"dataset file changed after the manifest was written: {path} "
                "(sha256 differs); regenerate or resample the dataset"
            )
        bar.update()
    return len(m)
