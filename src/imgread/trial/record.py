"""A trial's record: one row of trials.csv (TrialRecord), the machine and library versions
every record carries (platform_info), and writing it (atomically, as JSON)."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

from imgread.util import write_json_atomic


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
    dataset: str  # the dataset's name (the config's datasets; the study's is the first)
    dataset_encoding: str  # 'JPEG q90, 4:2:0, baseline' (generated), or 'as sampled'
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
    placement: str  # where the files were read on a cluster: in place, or a node-local copy
    own_cpu_seconds: float
    steal_seconds: float
    other_cpu_seconds: float
    interference_fraction: float
    memory_method: str  # the memory columns: imgread.instruments.memory
    peak_memory_bytes: int | None
    memory_baseline_bytes: int | None
    memory_per_worker_bytes: float | None
    memory_sample_period_s: float | None
    memory_sampler_cpu_s: float | None
    minor_faults: int | None  # the timed region's page faults: imgread.instruments.page_faults
    minor_faults_per_image: float | None
    minor_faults_method: str
    # where the bytes came from (imgread.storage): the profile, its kind and settings, the probe
    storage_kind: str
    storage_profile: str  # the profile's parameters as JSON
    server_cpu_seconds: float | None  # a storage server's CPU over the timed region
    extra: dict = field(default_factory=dict)  # the phase's keys and columns

    def to_dict(self) -> dict:
        """The record as a flat dict: the common columns, then the phase's."""
        d = asdict(self)
        extra = d.pop("extra")  # popped first: ``{**d, **d.pop(...)}`` copied it in as a dict
        return {**d, **extra}


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


def merge_columns(*parts: dict) -> dict:
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
    write_json_atomic(out, record.to_dict(), indent=2)
    return out
