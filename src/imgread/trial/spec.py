"""What one trial measures (TrialSpec) and the one way a spec is built (build_spec).

Whether a cell starts from a cold page cache is its phase's answer (``Phase.page_cache``),
asked in one place, :func:`is_cold`: the spec carries the answer and nothing after it asks
again (the trial's context, its record and the workflow's cache settings all read it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imgread.instruments import page_cache as cachectl
from imgread.phases.base import Phase
from imgread.phases.registry import get_phase

# The cache settings a cold cell takes (a warm cell is read once and proven warm instead).
CACHE_FIELDS = ("cache_method", "max_resident_fraction", "saturate_bytes", "saturate_dir")


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
    placement: str = "in place"  # where the files were read: in place, or a node-local copy
    storage: dict | None = None  # the storage profile (name, kind, parameters); None: local
    dataset: str = ""  # the dataset's name ("": its manifest's folder name)
    job_started_at: str | None = None  # when the trial's process started (UTC ISO 8601)
    # The page-cache state the trial starts from, is_cold's answer (build_spec sets it; None:
    # asked once when the trial is prepared, for a spec made by hand)
    cold: bool | None = None

    def describe(self) -> str:
        """A short label naming the cell, for messages."""
        keys = "".join(f" {k}={v}" for k, v in self.params.items())
        return (
            f"{self.phase}/{self.variant}{keys} n={self.n_images} workers={self.workers} "
            f"repetition={self.repetition}"
        )


def is_cold(phase: str | Phase, params: dict[str, str] | None) -> bool:
    """Whether the cell's trials start from a cold page cache (flushed and proven cold) rather
    than a warm one: the phase's ``page_cache`` of its resolved params. The one place it is
    asked: the workflow's cache settings and every trial take this answer. ``phase``: the
    Phase or its name."""
    phase = get_phase(phase) if isinstance(phase, str) else phase
    return phase.page_cache(phase.resolve(params)) == "cold"


def cold_of(spec: TrialSpec) -> bool:
    """The cold-or-warm answer the spec carries (asked of :func:`is_cold` where it carries
    none: a spec made by hand)."""
    return spec.cold if spec.cold is not None else is_cold(spec.phase, spec.params)


def build_spec(
    manifest: str,
    phase: str,
    variant: str,
    n_images: int,
    workers: int,
    repetition: int,
    params: dict[str, str],
    inputs: dict[str, str | None] | None = None,
    cache: dict | None = None,
    **where,
) -> TrialSpec:
    """The one way a trial's spec is built (the workflow's trial rule and ``imgread trial``):
    ``inputs`` the files the phase asked for (reference, cache_dir), ``cache`` the cache
    settings (method, max_resident_fraction, saturate_*) used where the cell starts cold,
    ``where`` the machine, placement, storage profile and job_started_at."""
    cold = is_cold(phase, params)
    settings = {k: v for k, v in (cache or {}).items() if k in CACHE_FIELDS} if cold else {}
    files = {k: str(v) for k, v in (inputs or {}).items() if v}
    return TrialSpec(
        manifest=str(manifest),
        phase=phase,
        variant=variant,
        n_images=int(n_images),
        workers=int(workers),
        repetition=int(repetition),
        params=dict(params),
        reference=files.get("reference"),
        cache_dir=files.get("cache_dir"),
        cold=cold,
        **settings,
        **where,
    )
