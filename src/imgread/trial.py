"""One trial: prepare the cache, prove its state, time exactly the work, return one tidy record.

Order inside a trial (each step's time is recorded in its own column):
1. check that every file still has the manifest's size and mtime (cheap ``stat``);
2. ``start`` the variant: pools created, every worker running -> ``startup_seconds``;
3. prepare the cache immediately before timing: flush and verify cold (load phase) or read
   once and verify warm (decode phase) -> ``prepare_seconds``, ``resident_fraction_before``;
4. ``run`` the work, timed with ``perf_counter_ns`` -> ``seconds``;
5. close the pools -> ``shutdown_seconds``;
6. check the results against the manifest (images, bytes, pixels), after the clock stopped.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from imgread import cache as cachectl
from imgread.errors import ImageDecodeError, TrialError, UserError, VerificationError
from imgread.manifest import ImageEntry, read_manifest
from imgread.readers import PHASES, get_variant, process_start_method
from imgread.util import write_text_atomic


@dataclass(frozen=True)
class TrialSpec:
    """What one trial measures: a grid cell and repetition, on one dataset."""

    manifest: str
    phase: str
    variant: str
    n_images: int
    workers: int = 1
    repetition: int = 0
    cache_method: str = cachectl.DEFAULT_METHOD
    max_resident_fraction: float = cachectl.DEFAULT_MAX_RESIDENT_FRACTION
    saturate_bytes: int = cachectl.DEFAULT_SATURATE_BYTES
    saturate_dir: str | None = None

    def describe(self) -> str:
        """A short label naming the cell, for messages."""
        return (
            f"{self.phase}/{self.variant} n={self.n_images} workers={self.workers} "
            f"repetition={self.repetition}"
        )


@dataclass
class TrialRecord:
    """One row of trials.csv. Times in seconds, sizes in bytes, timestamps UTC ISO 8601."""

    phase: str
    variant: str
    n_images: int
    workers: int
    repetition: int
    concurrency: int
    seconds: float
    startup_seconds: float
    total_seconds: float
    prepare_seconds: float
    shutdown_seconds: float
    images: int
    bytes: int
    pixels: int
    images_per_s: float
    mb_per_s: float
    megapixels_per_s: float
    cache_method: str
    cache_state: str
    resident_fraction_before: float | None
    max_resident_fraction: float
    peak_rss_self_bytes: int
    peak_rss_children_bytes: int
    started_at: str
    finished_at: str
    dataset_id: str
    hostname: str
    cpu_model: str
    logical_cores: int
    os: str
    python: str
    pillow: str
    libjpeg_turbo: str
    aiofiles: str
    snakemake: str
    imgread: str
    process_start_method: str

    def to_dict(self) -> dict:
        """The record as a flat dict."""
        return asdict(self)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@cache
def platform_info() -> dict:
    """Machine and library versions recorded with every trial."""
    import PIL
    from PIL import features

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "logical_cores": os.cpu_count() or 1,
        "os": platform.platform(),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": str(features.version("libjpeg_turbo") or "no"),
        "aiofiles": _version("aiofiles"),
        "snakemake": _version("snakemake"),
        "imgread": _version("imgread"),
    }


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def check_unchanged(root: Path, entries: tuple[ImageEntry, ...]) -> None:
    """Raise UserError naming the first file whose size or mtime differs from the manifest."""
    for e in entries:
        path = root / e.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise UserError(f"dataset file missing: {path} (listed in the manifest)") from None
        if st.st_size != e.bytes or st.st_mtime_ns != e.mtime_ns:
            raise UserError(
                f"dataset file changed after the manifest was written: {path} "
                f"(size {st.st_size} vs {e.bytes} bytes, mtime_ns {st.st_mtime_ns} vs "
                f"{e.mtime_ns}); regenerate or resample the dataset"
            )


def verify(
    phase: str, results: dict, root: Path, entries: tuple[ImageEntry, ...]
) -> tuple[int, int, int]:
    """Check a run's results against the manifest; return (images, bytes, pixels)."""
    expected = {str(root / e.path): e for e in entries}
    if set(results) != set(expected):
        missing = sorted(set(expected) - set(results))[:3]
        raise VerificationError(
            f"{phase}: results cover {len(results)} files, expected {len(expected)} "
            f"(missing e.g. {missing})"
        )
    total_bytes = total_pixels = 0
    for path, value in results.items():
        e = expected[path]
        if phase == "load":
            got = value.getbuffer().nbytes
            if got != e.bytes:
                raise VerificationError(f"load: {path} read {got} bytes, manifest says {e.bytes}")
            total_bytes += got
        else:
            if value != e.pixels:
                raise VerificationError(
                    f"decode: {path} gave {value} pixels, manifest says {e.width}x{e.height}"
                )
            total_pixels += value
            total_bytes += e.bytes
    return len(results), total_bytes, total_pixels


def run_trial(spec: TrialSpec) -> TrialRecord:
    """Run one trial as described in the module docstring and return its record."""
    if spec.phase not in PHASES:
        raise UserError(f"unknown phase {spec.phase!r}; choose one of {', '.join(PHASES)}")
    try:
        variant = get_variant(spec.phase, spec.variant)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if spec.workers < 1:
        raise UserError(f"workers must be at least 1, got {spec.workers}")
    if not variant.parallel and spec.workers != 1:
        raise UserError(f"variant {spec.phase}/{spec.variant} is not parallel: workers must be 1")
    if spec.cache_method not in cachectl.METHODS:
        raise UserError(
            f"unknown cache method {spec.cache_method!r}; "
            f"choose one of {', '.join(cachectl.METHODS)}"
        )
    manifest = read_manifest(spec.manifest)
    entries = manifest.subset(spec.n_images)
    check_unchanged(manifest.root, entries)
    paths = [str(manifest.root / e.path) for e in entries]
    started_at = _utc_now()

    runner = None
    try:
        t0 = time.perf_counter_ns()
        runner = variant.start(spec.workers)
        t1 = time.perf_counter_ns()
        if spec.phase == "load":
            resident = cachectl.ensure_cold(
                paths,
                spec.cache_method,
                spec.max_resident_fraction,
                saturate_bytes=spec.saturate_bytes,
                saturate_dir=spec.saturate_dir,
            )
            state = "unflushed" if spec.cache_method == "none" else "cold"
        else:
            # Decoding is measured on bytes already in memory, as the study did; only the
            # load phase is about the device.
            resident = cachectl.ensure_warm(paths)
            state = "warm"
        t2 = time.perf_counter_ns()
        results = runner.run(paths)
        t3 = time.perf_counter_ns()
    except BrokenProcessPool as exc:
        raise TrialError(
            f"trial {spec.describe()}: a worker process died ({exc}); no time recorded"
        ) from exc
    except (ImageDecodeError, OSError) as exc:
        raise TrialError(f"trial {spec.describe()}: {exc}; no time recorded") from exc
    finally:
        t_close = time.perf_counter_ns()
        if runner is not None:
            runner.close()
        t4 = time.perf_counter_ns()
    images, nbytes, pixels = verify(spec.phase, results, manifest.root, entries)
    del results
    finished_at = _utc_now()

    seconds = (t3 - t2) / 1e9
    startup = (t1 - t0) / 1e9
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    child_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return TrialRecord(
        phase=spec.phase,
        variant=spec.variant,
        n_images=spec.n_images,
        workers=spec.workers,
        repetition=spec.repetition,
        concurrency=runner.concurrency,
        seconds=seconds,
        startup_seconds=startup,
        total_seconds=seconds + startup,
        prepare_seconds=(t2 - t1) / 1e9,
        shutdown_seconds=(t4 - t_close) / 1e9,
        images=images,
        bytes=nbytes,
        pixels=pixels,
        images_per_s=images / seconds,
        mb_per_s=nbytes / 1e6 / seconds,
        megapixels_per_s=pixels / 1e6 / seconds,
        cache_method=spec.cache_method if spec.phase == "load" else "warm-read",
        cache_state=state,
        resident_fraction_before=resident,
        max_resident_fraction=spec.max_resident_fraction,
        peak_rss_self_bytes=self_ru.ru_maxrss * rss_unit,
        peak_rss_children_bytes=child_ru.ru_maxrss * rss_unit,
        started_at=started_at,
        finished_at=finished_at,
        dataset_id=manifest.dataset_id,
        process_start_method=process_start_method(),
        **platform_info(),
    )


def write_record(record: TrialRecord, out: str | os.PathLike) -> Path:
    """Write the record as JSON, atomically (temporary file, then rename)."""
    out = Path(out)
    write_text_atomic(out, json.dumps(record.to_dict(), indent=2, sort_keys=False) + "\n")
    return out
