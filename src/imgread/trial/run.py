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
   ``interference_fraction`` (imgread.instruments.noise); the minor page faults of the process and
   its workers over exactly that region -> ``minor_faults``, ``minor_faults_per_image``
   (imgread.instruments.page_faults); a ``limited`` cell runs several shuffled epochs here, in a
   memory cgroup with a limit, each timed on its own (imgread.trial.epochs);
5. close the pools -> ``shutdown_seconds``;
6. the phase checks the results (images, bytes, pixels, checksums) after the clock stopped
   -> ``verify_seconds`` where it does more than count.

Steps 2-5 run inside imgread.instruments.memory's meter (a memory cgroup, or PSS sampling): the
peak of the whole trial over the timed work -> ``peak_memory_bytes``, ``memory_per_worker_bytes``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from imgread.errors import ImageDecodeError, TrialError, UserError
from imgread.instruments import noise, page_faults
from imgread.instruments import page_cache as cachectl
from imgread.instruments.memory import MemoryMeter
from imgread.phases.base import Phase, Verified, call_hook
from imgread.phases.registry import get_phase
from imgread.storage import registry as storage
from imgread.storage.base import Probe
from imgread.trial import epochs
from imgread.trial.context import TrialContext, check_unchanged, read_dataset
from imgread.trial.pools import Runner, process_start_method
from imgread.trial.record import TrialRecord, merge_columns, platform_info, write_record
from imgread.trial.spec import TrialSpec, build_spec, cold_of

__all__ = [
    "TrialRecord",
    "TrialSpec",
    "build_spec",
    "check_unchanged",
    "run_trial",
    "write_record",
]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class _Prepared:
    """A trial ready to start: its spec, its phase, its context (imgread.trial.context: read
    once, handed down) and the files whose page-cache state it proves."""

    spec: TrialSpec
    phase: Phase
    ctx: TrialContext
    paths: list[str]


@dataclass
class _Timed:
    """What the clock and the cache proof measured, and the runner's own columns."""

    results: dict | None = None
    concurrency: int = 1
    fields: dict = field(default_factory=dict)
    resident: float | None = None
    state: str = ""
    ns: dict[str, int] = field(default_factory=dict)
    cpu: tuple = ()
    runner: Runner | None = None
    memory: dict = field(default_factory=dict)
    faults: tuple = (
        None,
        None,
    )  # imgread.instruments.page_faults snapshots right before and after the clock
    probe: Probe = field(default_factory=Probe)
    storage: dict = field(default_factory=dict)  # the storage session's own settings
    server_cpu: float | None = None  # the storage server's CPU seconds over the clock
    counted: dict | None = None  # the storage session's counters right before the clock
    transport: dict | None = None  # their change over the clock (retries, injected faults)
    limited: dict = field(default_factory=dict)  # a limited trial's epochs (trial.epochs)


def prepare(spec: TrialSpec) -> _Prepared:
    """Check the spec against the phase and the dataset (step 1), before anything starts: the
    manifest and dataset.json read once into the trial's context, every refusal of the phase
    (its ``check``) made before any storage server or namespace starts."""
    phase = get_phase(spec.phase)
    phase.variant(spec.variant)
    why = phase.missing(spec.variant)
    if why:
        raise UserError(
            f"trial {spec.describe()}: {spec.phase} {spec.variant} cannot run here: {why}"
        )
    params = phase.resolve(spec.params)
    _refuse(spec, phase, params)
    spec = replace(spec, params=params)
    data = read_dataset(spec.manifest, spec.n_images)
    ctx = TrialContext(
        spec.variant,
        spec.workers,
        params,
        data.manifest,
        data.entries,
        dataset=spec.dataset or data.manifest.root.name,
        encoding=data.encoding,
        reference=spec.reference,
        cache_dir=spec.cache_dir,
        manifest_path=str(spec.manifest),
        cold=cold_of(spec),
    )
    ctx = ctx.with_jobs(call_hook(phase, "jobs", ctx))
    call_hook(phase, "check", ctx)
    paths = call_hook(phase, "cache_files", ctx)
    profile = storage.profile_from(spec.storage)
    if params.get("storage", storage.DEFAULT) != profile.name:
        raise UserError(
            f"trial {spec.describe()}: grid key storage={params.get('storage')!r} but the spec "
            f"carries the profile {profile.name!r}"
        )
    return _Prepared(spec, phase, replace(ctx, profile=profile), paths)


def _refuse(spec: TrialSpec, phase: Phase, params: dict[str, str]) -> None:
    """UserError where the variant cannot run with these params, workers or cache method."""
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


def prove_cache(t: _Prepared) -> tuple[float | None, str]:
    """Make the page cache what the cell claims, right before the clock (step 3): flushed and
    proven cold, or read and proven warm. (resident fraction before, state)."""
    spec = t.spec
    if not t.ctx.cold:
        # Decoding is measured on files already in memory, as the study did; only the phases
        # that read from the device start cold.
        return cachectl.ensure_warm(t.paths), "warm"
    resident = cachectl.ensure_cold(
        t.paths,
        spec.cache_method,
        spec.max_resident_fraction,
        saturate_bytes=spec.saturate_bytes,
        saturate_dir=spec.saturate_dir,
    )
    return resident, "unflushed" if spec.cache_method == "none" else "cold"


def time_work(t: _Prepared, meter: MemoryMeter) -> _Timed:
    """Start the variant, prove the cache, time exactly the work, close (steps 2-5). A dead
    worker, an unreadable image or an OS error becomes a TrialError naming the cell."""
    out = _Timed()
    ns, jobs = out.ns, list(t.ctx.jobs)
    try:
        # The storage is set up and probed before the variant starts (its workers join a
        # volume's cgroup), and torn down after close() on every way out.
        client = t.ctx.params.get("client", storage.DEFAULT_CLIENT)  # the S3 clients' key
        with storage.session(t.ctx.profile, t.ctx.root, client) as (where, out.probe):
            out.storage = where.settings()
            try:
                ns["start"] = time.perf_counter_ns()
                out.runner = call_hook(t.phase, "start", t.ctx.with_opener(where.opener))
                ns["started"] = time.perf_counter_ns()
                limited = epochs.is_limited(t.ctx.params) and epochs.Limited(t, out.runner, meter)
                if limited:  # the untimed epoch whose peak sets the limit, before the proof
                    limited.calibrate(jobs)
                out.resident, out.state = prove_cache(t)
                before, served = noise.snapshot(), where.server_cpu_seconds()
                out.counted = where.counts()
                meter.start()
                faulted = page_faults.snapshot()
                ns["run"] = time.perf_counter_ns()
                out.results = (limited or out.runner).run(jobs)
                ns["ran"] = time.perf_counter_ns()
                out.faults = (faulted, page_faults.snapshot())
                out.cpu = (before, noise.snapshot())
                out.transport = storage.counts_change(t.ctx.profile, out.counted, where.counts())
                if served is not None:
                    out.server_cpu = where.server_cpu_seconds() - served
                out.memory = meter.stop()
                out.limited = limited.fields if limited else {}
            finally:
                # Around close() too: a worker's death may be reported asynchronously (PyTorch
                # raises it from its SIGCHLD handler, wherever the main thread happens to be).
                ns["close"] = time.perf_counter_ns()
                if out.runner is not None:
                    out.fields = out.runner.fields()
                    out.runner.close()
                ns["closed"] = time.perf_counter_ns()
                where.opener.close()
                if out.transport is None:  # failed: what the transport did, for the message
                    out.transport = storage.counts_change(
                        t.ctx.profile, out.counted, where.counts()
                    )
    except BaseException as exc:
        release(out)
        error = _as_trial_error(
            t.spec, out.runner, exc, storage.counts_line(t.ctx.profile, out.transport)
        )
        if error is None:
            raise
        raise error from exc
    out.concurrency = out.runner.concurrency
    return out


def release(timed: _Timed) -> None:
    """Unmap what the runner kept for the check after the clock (shared memory)."""
    timed.results = None  # the arrays may be views of memory that release() unmaps
    if timed.runner is not None:
        timed.runner.release()


def _as_trial_error(
    spec: TrialSpec, runner, exc: BaseException, transport: str = ""
) -> TrialError | None:
    """The TrialError a failure inside the trial becomes (None: re-raise it as it is);
    ``transport``: the storage kind's words on what its transport did (storage.counts_line)."""
    if isinstance(exc, BrokenProcessPool):
        return TrialError(_died(spec, exc))
    if isinstance(exc, RuntimeError) and runner is not None and runner.died(exc):
        return TrialError(_died(spec, exc))
    if isinstance(exc, ImageDecodeError | OSError):
        return TrialError(f"trial {spec.describe()}: {exc}{transport}; no time recorded")
    return None


def run_trial(spec: TrialSpec) -> TrialRecord:
    """Run one trial as described in the module docstring and return its record:
    prepare -> (start, prove the cache, time, close) -> verify -> record."""
    t = prepare(spec)
    started_at = _utc_now()
    with MemoryMeter(spec.workers) as meter:  # workers start and end inside it
        timed = time_work(t, meter)
    try:
        checked = call_hook(t.phase, "verify", t.ctx, timed.results)
    finally:
        release(timed)
    return record(t, timed, checked, started_at)


def record(t: _Prepared, timed: _Timed, checked: Verified, started_at: str) -> TrialRecord:
    """The trial's tidy record (step 6): times, counts, rates, cache proof, noise, machine."""
    spec, ctx, ns = t.spec, t.ctx, timed.ns
    clock = (ns["ran"] - ns["run"]) / 1e9
    # a limited trial: a steady epoch's seconds (trial.epochs); its epochs in epochs_measured
    seconds = timed.limited.pop("steady_seconds", None) or clock
    startup = (ns["started"] - ns["start"]) / 1e9
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    child_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    cpu = noise.interference(*timed.cpu, clock, os.cpu_count() or 1, timed.server_cpu or 0.0)
    return TrialRecord(
        phase=spec.phase,
        variant=spec.variant,
        n_images=spec.n_images,
        workers=spec.workers,
        repetition=spec.repetition,
        concurrency=timed.concurrency,
        seconds=seconds,
        startup_seconds=startup,
        total_seconds=seconds + startup,
        prepare_seconds=(ns["run"] - ns["started"]) / 1e9,
        shutdown_seconds=(ns["closed"] - ns["close"]) / 1e9,
        images=checked.images,
        bytes=checked.bytes,
        pixels=checked.pixels,
        images_per_s=checked.images / seconds,
        mb_per_s=checked.bytes / 1e6 / seconds,
        megapixels_per_s=checked.pixels / 1e6 / seconds,
        cache_method=spec.cache_method if ctx.cold else "warm-read",
        cache_state=timed.state,
        resident_fraction_before=timed.resident,
        max_resident_fraction=spec.max_resident_fraction,
        peak_rss_self_bytes=self_ru.ru_maxrss * rss_unit,
        peak_rss_children_bytes=child_ru.ru_maxrss * rss_unit,
        started_at=started_at,
        finished_at=_utc_now(),
        job_started_at=spec.job_started_at or started_at,
        dataset_id=ctx.dataset_id,
        dataset=ctx.dataset,
        dataset_encoding=ctx.encoding,
        process_start_method=process_start_method(),
        extra=merge_columns(
            t.phase.record_fields(ctx.params),
            timed.fields,
            timed.limited,
            checked.extra,
            timed.storage,
            timed.transport or {},
            timed.probe.columns(),
            storage_ceilings(t, timed, checked, seconds),
            client_cpu(timed, checked, cpu["own_cpu_seconds"]),
        ),
        machine=spec.machine,
        placement=spec.placement,
        storage_kind=ctx.profile.kind,
        storage_profile=json.dumps(ctx.profile.params, sort_keys=True),
        server_cpu_seconds=timed.server_cpu,
        **cpu,
        **timed.memory,
        **page_faults.columns(*timed.faults, checked.images),
        **platform_info(),
    )


def client_cpu(timed: _Timed, checked: Verified, own: float) -> dict:
    """The storage client's CPU per request over the clock, ms: the trial's own process tree
    (the server's and the fault proxy's CPU taken out), per image or shard read; {} where the
    trial read no server (the storage kinds without a server CPU)."""
    if timed.server_cpu is None:
        return {}
    requests = checked.extra.get("shards_read") or timed.fields.get("shards_read")
    proxy = (timed.transport or {}).get("proxy_cpu_seconds") or 0.0
    own = max(own - proxy, 0.0)
    return {"client_cpu_ms_per_request": own * 1e3 / max(requests or checked.images, 1)}


def storage_ceilings(t: _Prepared, timed: _Timed, checked: Verified, seconds: float) -> dict:
    """The storage's own ceilings on this trial's rate, from the probe (not the profile):
    Little's law, rate <= requests in flight / latency (for kinds whose every request has a
    latency: http), and the probed bandwidth (for a volume, read in IOs of read_ahead_kb, so
    its IOPS cap is in it); in images/s and MB/s (NaN where the kind probes neither). A
    request carries one image, or from tar shards all the images of a shard."""
    p, images = timed.probe, max(checked.images, 1)
    mean_mb = checked.bytes / 1e6 / images
    nan = float("nan")
    profile = t.ctx.profile
    per_request = storage.get_kind(profile.kind).expected_latency_ms(profile) is not None
    requests = checked.extra.get("shards_read") or timed.fields.get("shards_read") or images
    little = (
        timed.concurrency / (p.latency_ms / 1e3) * images / requests
        if p.latency_ms and per_request
        else nan
    )
    band = p.bandwidth_mb_per_s / mean_mb if p.bandwidth_mb_per_s and mean_mb else nan
    return {
        "ceiling_little_images_per_s": little,
        "ceiling_bandwidth_images_per_s": band,
        "ceiling_storage_images_per_s": min(little, band) if little == little else band,
        "ceiling_storage_mb_per_s": (min(little, band) if little == little else band) * mean_mb,
    }


def _died(spec: TrialSpec, exc: BaseException) -> str:
    return f"trial {spec.describe()}: a worker process died ({exc}); no time recorded"
