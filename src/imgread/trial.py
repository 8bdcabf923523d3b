"""One trial of any phase: prepare the cache, prove its state, time exactly the work, return
one tidy record. The phase (imgread.phases) supplies its jobs, variants and checks.

Order inside a trial (each step's time is recorded in its own column):
1. check that every file still has the manifest's size and mtime (cheap ``stat``), and let the
   phase refuse what cannot run here (memory for decoded pixels);
2. ``start`` the variant: pools created, every worker running, buffers allocated
   -> ``startup_seconds``;
3. prepare the cache immediately before timing: flush and verify cold (phases that read from
   the device) or read once and verify warm -> ``prepare_seconds``, ``resident_fraction_before``;
4. ``run`` the work, timed with ``perf_counter_ns`` -> ``seconds``; the CPU the hypervisor and
   other processes took meanwhile -> ``steal_seconds``, ``other_cpu_seconds``,
   ``interference_fraction`` (imgread.noise);
5. close the pools -> ``shutdown_seconds``;
6. the phase checks the results (images, bytes, pixels, checksums) after the clock stopped
   -> ``verify_seconds`` where it does more than count.
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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path

from imgread import cache as cachectl
from imgread import noise
from imgread.errors import ImageDecodeError, TrialError, UserError
from imgread.manifest import ImageEntry, read_manifest
from imgread.phases import get_phase
from imgread.pools import process_start_method
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
    params: dict[str, str] = field(default_factory=dict)  # the phase's grid keys
    reference: str | None = None  # checksums to verify delivered pixels against
    cache_dir: str | None = None  # a decoded cache (imgread cache build), for phases that read one
    machine: str = "local"  # the machine type (SLURM partition) the cell is measured on
    storage: str = "in place"  # where the files were read: in place, or a node-local copy
    job_started_at: str | None = None  # when the trial's process started (UTC ISO 8601)

    def describe(self) -> str:
        """A short label naming the cell, for messages."""
        keys = "".join(f" {k}={v}" for k, v in self.params.items())
        return (
            f"{self.phase}/{self.variant}{keys} n={self.n_images} workers={self.workers} "
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
    job_started_at: str
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
    physical_cores: int
    memory_total_bytes: int
    slurm_job_id: str
    slurm_partition: str
    machine: str
    storage: str
    own_cpu_seconds: float
    steal_seconds: float
    other_cpu_seconds: float
    interference_fraction: float
    extra: dict = field(default_factory=dict)  # the phase's keys and columns

    def to_dict(self) -> dict:
        """The record as a flat dict: the common columns, then the phase's."""
        d = asdict(self)
        return {**d, **d.pop("extra")}


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
        "physical_cores": physical_cores(),
        "memory_total_bytes": _memory_total(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_partition": os.environ.get("SLURM_JOB_PARTITION", ""),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": str(features.version("libjpeg_turbo") or "no"),
        "aiofiles": _version("aiofiles"),
        "snakemake": _version("snakemake"),
        "imgread": _version("imgread"),
    }


def _memory_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def physical_cores() -> int:
    """Physical cores (distinct (package, core) pairs in /proc/cpuinfo); logical if unknown."""
    pairs, package = set(), None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    package = value.strip()
                elif key == "core id":
                    pairs.add((package, value.strip()))
    except OSError:
        pass
    return len(pairs) or os.cpu_count() or 1


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


def run_trial(spec: TrialSpec) -> TrialRecord:
    """Run one trial as described in the module docstring and return its record."""
    phase = get_phase(spec.phase)
    phase.variant(spec.variant)
    params = phase.resolve(spec.params)
    why = phase.unsupported(spec.variant, params)
    if why:
        raise UserError(why)
    variant = phase.variants[spec.variant]
    if spec.workers < variant.min_workers:
        raise UserError(
            f"workers must be at least {variant.min_workers} for {spec.phase}/{spec.variant}, "
            f"got {spec.workers}"
        )
    if not variant.parallel and spec.workers != 1:
        raise UserError(f"variant {spec.phase}/{spec.variant} is not parallel: workers must be 1")
    if spec.cache_method not in cachectl.METHODS:
        raise UserError(
            f"unknown cache method {spec.cache_method!r}; "
            f"choose one of {', '.join(cachectl.METHODS)}"
        )
    spec = replace(spec, params=params)
    manifest = read_manifest(spec.manifest)
    entries = manifest.subset(spec.n_images)
    check_unchanged(manifest.root, entries)
    inputs = {k: v for k, v in (("reference", spec.reference), ("cache_dir", spec.cache_dir)) if v}
    inputs["manifest"] = str(spec.manifest)
    jobs = phase.jobs(manifest.root, entries, params)
    phase.check(jobs, spec.workers, spec.variant, params)
    paths = phase.cache_files(jobs, params, inputs)
    cold = phase.page_cache(params) == "cold"
    started_at = _utc_now()

    runner = None
    results = None
    try:
        try:
            try:
                t0 = time.perf_counter_ns()
                runner = phase.start(spec.variant, spec.workers, params, jobs, inputs)
                t1 = time.perf_counter_ns()
                if cold:
                    resident = cachectl.ensure_cold(
                        paths,
                        spec.cache_method,
                        spec.max_resident_fraction,
                        saturate_bytes=spec.saturate_bytes,
                        saturate_dir=spec.saturate_dir,
                    )
                    state = "unflushed" if spec.cache_method == "none" else "cold"
                else:
                    # Decoding is measured on files already in memory, as the study did;
                    # only the phases that read from the device start cold.
                    resident = cachectl.ensure_warm(paths)
                    state = "warm"
                cpu_before = noise.snapshot()
                t2 = time.perf_counter_ns()
                results = runner.run(jobs)
                t3 = time.perf_counter_ns()
                cpu_after = noise.snapshot()
            finally:
                t_close = time.perf_counter_ns()
                if runner is not None:
                    fields = runner.fields()
                    runner.close()
                t4 = time.perf_counter_ns()
        # Around close() too: a worker's death may be reported asynchronously (PyTorch raises
        # it from its SIGCHLD handler, wherever the main thread happens to be).
        except BrokenProcessPool as exc:
            raise TrialError(_died(spec, exc)) from exc
        except RuntimeError as exc:
            if runner is not None and runner.died(exc):
                raise TrialError(_died(spec, exc)) from exc
            raise
        except (ImageDecodeError, OSError) as exc:
            raise TrialError(f"trial {spec.describe()}: {exc}; no time recorded") from exc
        checked = phase.verify(results, manifest.root, entries, params, inputs)
    finally:
        results = None  # the arrays may be views of memory that release() unmaps
        if runner is not None:
            runner.release()
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
        images=checked.images,
        bytes=checked.bytes,
        pixels=checked.pixels,
        images_per_s=checked.images / seconds,
        mb_per_s=checked.bytes / 1e6 / seconds,
        megapixels_per_s=checked.pixels / 1e6 / seconds,
        cache_method=spec.cache_method if cold else "warm-read",
        cache_state=state,
        resident_fraction_before=resident,
        max_resident_fraction=spec.max_resident_fraction,
        peak_rss_self_bytes=self_ru.ru_maxrss * rss_unit,
        peak_rss_children_bytes=child_ru.ru_maxrss * rss_unit,
        started_at=started_at,
        finished_at=finished_at,
        job_started_at=spec.job_started_at or started_at,
        dataset_id=manifest.dataset_id,
        process_start_method=process_start_method(),
        extra=_merge_columns(phase.record_fields(params), fields, checked.extra),
        machine=spec.machine,
        storage=spec.storage,
        **noise.interference(cpu_before, cpu_after, seconds, os.cpu_count() or 1),
        **platform_info(),
    )


def _died(spec: TrialSpec, exc: BaseException) -> str:
    return f"trial {spec.describe()}: a worker process died ({exc}); no time recorded"


def _merge_columns(*parts: dict) -> dict:
    """One dict of the record's phase columns; a name given twice is a bug, not an update."""
    out: dict = {}
    for part in parts:
        clash = set(out) & set(part)
        if clash:
            raise RuntimeError(f"record columns given twice: {sorted(clash)}")
        out.update(part)
    return out


def write_record(record: TrialRecord, out: str | os.PathLike) -> Path:
    """Write the record as JSON, atomically (temporary file, then rename)."""
    out = Path(out)
    write_text_atomic(out, json.dumps(record.to_dict(), indent=2, sort_keys=False) + "\n")
    return out
