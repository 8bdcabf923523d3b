"""Generation: a deterministic synthetic dataset (JPEG by default; PNG, WebP or AVIF).

Built to cost little more than the JPEG encoding itself: a few photo-like textures
(:mod:`imgread.dataset.textures`) are synthesised once, and every image is a zero-copy view
into one of them (a distinct crop offset, colour variant and vertical orientation), handed
straight to the encoder.
"""

from __future__ import annotations

import io
import math
import mmap
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from imgread.dataset.folder import (
    DEFAULT_SEED,
    IMAGES_DIR,
    prepare_out_dir,
    write_failed,
    write_image,
    write_info,
)
from imgread.dataset.identity import content_id
from imgread.dataset.manifest import ImageEntry, write_manifest
from imgread.dataset.textures import N_COLOURS, N_TEXTURES, colour_luts, texture_image
from imgread.errors import UserError
from imgread.util import Progress, end_on_sigterm

DEFAULT_COUNT = 900
DEFAULT_WIDTH = 4032
DEFAULT_HEIGHT = 3024
DEFAULT_TARGET_BYTES = 4_000_000
SIZE_TOLERANCE = 0.10

OFFSET_STEP = 8  # crop offsets on an 8-px grid: neighbouring images differ by whole blocks

FORMATS = ("jpeg", "png", "webp", "avif")
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # Pillow's subsampling= values
_LATER_DEFAULTS = {
    "size_spread": 0.0,
    "format": "jpeg",
    "quality": None,
    "subsampling": "4:2:0",
    "progressive": False,
}


def _pillow_writes(name: str) -> bool:
    from PIL import Image as _Image

    _Image.init()
    return name in _Image.SAVE


@dataclass(frozen=True)
class Encoding:
    """How each image is encoded; ``quality`` is the starting quality (nudged toward the
    target size unless ``fixed``)."""

    format: str = "jpeg"
    quality: int = 90
    subsampling: str = "4:2:0"
    progressive: bool = False
    fixed: bool = False

    def encode(self, img: Image.Image, quality: int | None = None) -> bytes:
        q = self.quality if quality is None else quality
        out = io.BytesIO()
        if self.format == "jpeg":
            kw = {"subsampling": SUBSAMPLING[self.subsampling]}
            if self.progressive:
                kw["progressive"] = True
            img.save(out, "JPEG", quality=q, **kw)
        elif self.format == "png":
            img.convert("RGB").save(out, "PNG")
        elif self.format == "webp":
            img.convert("RGB").save(out, "WEBP", quality=q)
        else:
            img.convert("RGB").save(out, "AVIF", quality=q)
        return out.getvalue()

    @property
    def tunable(self) -> bool:
        """Whether the quality is chosen to reach a size (not fixed, not lossless)."""
        return not self.fixed and self.format != "png"


@dataclass(frozen=True)
class GenerateParams:
    """What :func:`generate` makes; stored in dataset.json."""

    count: int = DEFAULT_COUNT
    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    target_bytes: int = DEFAULT_TARGET_BYTES
    seed: int = DEFAULT_SEED
    # Added later; at these defaults a dataset is made exactly as before.
    size_spread: float = 0.0  # each side drawn within +-size_spread of width / height
    format: str = "jpeg"  # jpeg, png, webp, avif (FORMATS)
    quality: int | None = None  # None: the quality whose mean size is nearest target_bytes
    subsampling: str = "4:2:0"  # jpeg: chroma subsampling
    progressive: bool = False  # jpeg: progressive instead of baseline

    def info(self) -> dict:
        """The fields dataset.json records (the later ones only where not at their default,
        so that a dataset made before them is described as it was)."""
        d = dict(self.__dict__)
        for k, v in _LATER_DEFAULTS.items():
            if d[k] == v:
                del d[k]
        return d

    def check(self) -> None:
        """Raise UserError naming the first out-of-range field."""
        if self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "avif" and not _pillow_writes("AVIF"):
            raise UserError(
                "--format avif: this Pillow cannot write AVIF (Pillow >= 11.2 with AVIF "
                "support, or the pillow-avif-plugin); choose jpeg, png or webp"
            )
        if self.subsampling not in SUBSAMPLING:
            raise UserError(
                f"--subsampling must be one of {', '.join(SUBSAMPLING)}, got {self.subsampling!r}"
            )
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise UserError(f"--quality must be 1 to 100, got {self.quality}")
        if not 0 <= self.size_spread < 1:
            raise UserError(f"--size-spread must be at least 0 and below 1, got {self.size_spread}")
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


def _shuffled_order(count: int, seed: int) -> np.ndarray:
    """order[k] = the index of the image at position k of the fixed shuffled order."""
    return np.random.default_rng([seed, 0x5EED]).permutation(count)


# --------------------------------------------------------------------------- generation workers

_BASES: list[np.ndarray] = []  # RGBX arrays, set in each worker (inherited by fork)


def _init_worker(bases: list[np.ndarray]) -> None:
    global _BASES
    _BASES = bases


def _target(target: int, size: tuple[int, int], params: GenerateParams) -> int:
    """An image's size target: the mean target scaled by its area (sizes drawn around)."""
    return max(1, round(target * size[0] * size[1] / (params.width * params.height)))


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
    return Encoding(quality=quality).encode(img)


def _make_one(args) -> tuple[int, str, int, int, int, str, int, int]:
    index, variant, width, height, enc, target, out_dir = args
    img = _view(variant, width, height)
    quality = enc.quality
    data = enc.encode(img, quality)
    # A size outside the tolerance is re-encoded at a nudged quality (rare; bounded tries).
    for _ in range(4 if enc.tunable else 0):
        ratio = len(data) / target
        if abs(ratio - 1) <= SIZE_TOLERANCE * 0.95:
            break
        quality = int(np.clip(quality + (-2 if ratio > 1 else 2), 1, 100))
        data = enc.encode(img, quality)
    rel = f"{IMAGES_DIR}/img_{index:05d}.{EXTENSIONS[enc.format]}"
    dest = Path(out_dir) / rel
    write_image(dest, data)
    mtime_ns = os.stat(dest).st_mtime_ns
    return (index, rel, len(data), width, height, content_id(data), mtime_ns, quality)


def _mp_context():
    # fork shares the texture arrays with the workers for free; elsewhere they are pickled.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else methods[0])


def _texture_job(args) -> int:
    """Synthesise texture ``t`` and write its N_COLOURS RGBX colour variants into the bases."""
    seed, t, width, height = args
    rgb = texture_image(seed, t, width, height)
    for k, lut in enumerate(colour_luts(seed, t)):
        rgbx = rgb.point(lut.ravel().tolist()).convert("RGBX").tobytes()
        _BASES[t * N_COLOURS + k].reshape(-1)[:] = np.frombuffer(rgbx, dtype=np.uint8)
    return t


# --------------------------------------------------------------------------- generation


def _calibrate_quality(
    variants: list[_Variant], width: int, height: int, target: int, enc: Encoding = Encoding()
) -> int:
    """The quality whose mean size over a few sample images is closest to ``target``.

    Measured on centre crops of a quarter of the area (the textures are stationary, so size
    scales with area) to keep calibration a small part of generation.
    """
    box = (width // 4, height // 4, width // 4 + width // 2, height // 4 + height // 2)
    samples = [_view(v, width, height).crop(box) for v in variants[:3]]
    scaled_target = target * (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    lo, hi, best = 1, 100, None

    def mean_size(q: int) -> float:
        return float(np.mean([len(enc.encode(img, q)) for img in samples]))

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
    """Generate a deterministic synthetic dataset in ``out``; return the manifest path."""
    params.check()
    out = Path(out)
    prepare_out_dir(out)
    workers = workers or os.cpu_count() or 1
    w, h = _largest(params.width, params.size_spread), _largest(params.height, params.size_spread)
    margin_x, margin_y = _margins(params, w, h)
    tw, th = w + margin_x, h + margin_y
    write_info(out, {"kind": "generated", "complete": False, **params.info()})
    bases = _shared_bases(tw, th)
    _init_worker(bases)
    ctx = _mp_context()
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=end_on_sigterm)
        if ctx.get_start_method() == "fork" and workers > 1
        else None
    )
    try:
        manifest = _generate_with(pool, out, params, bases, w, h, tw - w, th - h, progress)
    except OSError as exc:
        raise write_failed(exc, out) from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        del bases
        _init_worker([])
    return manifest


def _largest(side: int, spread: float) -> int:
    return int(side * (1 + spread))


def _margins(params: GenerateParams, w: int, h: int) -> tuple[int, int]:
    """The textures' margin past the largest image: a sixteenth of each side, grown where the
    count needs more distinct crop offsets than that allows (small images, many of them)."""
    margin_x, margin_y = max(w // 16, 16), max(h // 16, 16)
    cells = N_TEXTURES * N_COLOURS * 2 * (margin_x // OFFSET_STEP) * (margin_y // OFFSET_STEP)
    if params.count > cells:
        per_axis = math.ceil(math.sqrt(params.count / (N_TEXTURES * N_COLOURS * 2)))
        margin_x = max(margin_x, per_axis * OFFSET_STEP)
        margin_y = max(margin_y, per_axis * OFFSET_STEP)
    return margin_x, margin_y


def _image_sizes(params: GenerateParams) -> list[tuple[int, int]]:
    """Each image's (width, height): the params' size, or drawn around it (seeded; even)."""
    if not params.size_spread:
        return [(params.width, params.height)] * params.count
    rng = np.random.default_rng([params.seed, 0x512E])
    lo = 1 - params.size_spread
    ws = rng.uniform(lo, 1 + params.size_spread, params.count) * params.width
    hs = rng.uniform(lo, 1 + params.size_spread, params.count) * params.height
    return [
        (max(16, int(x) // 2 * 2), max(16, int(y) // 2 * 2)) for x, y in zip(ws, hs, strict=True)
    ]


def _shared_bases(tw: int, th: int) -> list[np.ndarray]:
    """The N_TEXTURES x N_COLOURS bases (th x tw x 4) in one shared anonymous mapping.

    Made before the pool forks: the workers synthesise them in parallel and read them back
    for encoding, with nothing pickled.
    """
    n_bases = N_TEXTURES * N_COLOURS
    slot = th * tw * 4
    shared = mmap.mmap(-1, n_bases * slot)
    return [
        np.frombuffer(shared, dtype=np.uint8, count=slot, offset=k * slot).reshape(th, tw, 4)
        for k in range(n_bases)
    ]


def _generate_with(pool, out, params, bases, w, h, margin_x, margin_y, progress) -> Path:
    run = pool.map if pool is not None else map
    list(
        run(_texture_job, [(params.seed, t, w + margin_x, h + margin_y) for t in range(N_TEXTURES)])
    )
    variants = _choose_variants(params, len(bases), margin_x, margin_y)
    enc = Encoding(
        params.format,
        params.quality or 90,
        params.subsampling,
        params.progressive,
        fixed=params.quality is not None,
    )
    if enc.tunable:
        enc = replace(
            enc,
            quality=_calibrate_quality(
                variants, params.width, params.height, params.target_bytes, enc
            ),
        )
    entries, qualities = _encode_all(pool, out, params, variants, enc, progress)
    quality = enc.quality
    manifest = write_manifest(out, entries)
    sizes = np.array([e.bytes for e in entries])
    quality_info = (
        {}
        if params.format == "png"  # lossless: no quality
        else {
            f"{params.format}_quality": quality,
            f"{params.format}_quality_range": [min(qualities), max(qualities)],
        }
    )
    write_info(
        out,
        {
            "kind": "generated",
            "complete": True,
            **params.info(),
            **quality_info,
            "mean_bytes": float(sizes.mean()),
            "min_bytes": int(sizes.min()),
            "max_bytes": int(sizes.max()),
        },
    )
    return manifest


def _choose_variants(
    params: GenerateParams, n_bases: int, margin_x: int, margin_y: int
) -> list[_Variant]:
    """Every image's distinct (base, offset, flip): distinct by construction, seeded."""
    # Exclusive of the margin: a view must have stride x height bytes after its start.
    offsets_x = range(0, margin_x, OFFSET_STEP)
    offsets_y = range(0, margin_y, OFFSET_STEP)
    n_cells = n_bases * len(offsets_x) * len(offsets_y) * 2
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
    return variants


def _encode_all(
    pool, out: Path, params: GenerateParams, variants: list[_Variant], enc: Encoding, progress
) -> tuple[list[ImageEntry], list[int]]:
    """Encode and write every image (in parallel where there is a pool); return the manifest
    entries at their shuffled positions and the quality each image ended at."""
    sizes = _image_sizes(params)
    target = params.target_bytes
    jobs = [
        (
            i,
            variants[i],
            *sizes[i],
            replace(enc, quality=enc.quality),
            _target(target, sizes[i], params),
            str(out),
        )
        for i in range(params.count)
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
    return entries, qualities
