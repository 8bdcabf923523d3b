"""The ``limited`` page-cache state (docs/limited.md): data larger than the memory left for it.

A limited trial is started as any other, then, before the clock:
1. one untimed *calibration* epoch over all n images, without a limit, in the trial's memory
   cgroup (imgread.instruments.memcg): its peak less its file pages is the trial's own memory
   (the runner, its workers, the batches in flight and the epoch's results kept for the
   check) -> ``calibration_peak_bytes``;
2. the cache evicted and proven cold, as a cold trial's is (trial.run.prove_cache);
3. the cgroup's limit set to :func:`memory_limit`: that peak + a margin + ``cache_share`` x
   the bytes the epoch reads -> ``memory_limit_bytes``. The kernel reclaims the cgroup's file
   pages first, so what is left over the trial's own memory is the page cache it may keep. On
   v1 the limit then follows the trial's running peak: where its own memory (usage less file
   pages) rises above the calibrated peak, the watcher raises the limit with it, so that the
   cache keeps its room -> ``memory_limit_max_bytes``.

Then ``epochs`` epochs, each in a fresh order shuffled with ``shuffle_seed + epoch`` and timed
on its own. Per epoch the bytes asked for (the files' sizes) and the bytes the device served
to the trial's processes (the sum of ``read_bytes`` of /proc/<pid>/io over the trial process
and its descendants: counted by the kernel's block layer, independent of the limit) give
``cache_hit_ratio = 1 - bytes_read / bytes_requested``. An out-of-memory condition is a failed
trial: on cgroup v1 the OOM killer is disabled for the cgroup and a watcher (a process of its
own, outside the cgroup) lifts the limit as soon as the cgroup is under OOM, nothing killed;
on v2 ``memory.events``' ``oom_kill`` is read after each epoch; either way a TrialError names
the limit.
"""

from __future__ import annotations

import errno
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from imgread.errors import TrialError, UserError, VerificationError
from imgread.instruments.memcg import TrialCgroup, file_pages
from imgread.instruments.procmem import process_tree

STATE = "limited"
# The margin over the calibrated peak: what the trial's own memory rises above it for a moment
# (seen: over 5 MiB in-process, num_workers 0); the page cache has it whenever it is unused,
# so each epoch records the cache the cgroup held (cached_bytes)
MARGIN_FRACTION = 0.05
MARGIN_BYTES = 16 << 20
SEED = 2028  # shuffle_seed = SEED + repetition: one order per epoch, reproducible per trial
WATCH_PERIOD_S = 0.02


def is_limited(params: dict) -> bool:
    """True for a cell of the ``limited`` page-cache state."""
    return params.get("page_cache") == STATE


def memory_limit(peak_bytes: int, dataset_bytes: int, cache_share: float) -> int:
    """The cgroup limit: the trial's measured peak + a margin (5 % of it, at least 16 MiB)
    + ``cache_share`` x the bytes the epoch reads."""
    margin = max(int(peak_bytes * MARGIN_FRACTION), MARGIN_BYTES)
    return int(peak_bytes) + margin + int(cache_share * dataset_bytes)


def hit_ratio(requested: int, read: int) -> float:
    """The share of the bytes asked for that the device did not serve (NaN for none asked).
    Not clamped: readahead past what was asked shows as a ratio below 0."""
    return 1.0 - read / requested if requested else float("nan")


def steady_rate(rates: list[float]) -> float:
    """The steady-state rate: the median of the epochs after the first (the only one, if one)."""
    return statistics.median(rates[1:] or rates)


def read_bytes(pids: list[int]) -> int:
    """The bytes the block layer served these processes (``read_bytes`` of /proc/<pid>/io)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile (the trial's processes are persistent workers)
    return total


# The watcher: a process of its own, moved out of the trial's cgroup before it runs a line of
# Python (a thread could not help: the thread stuck at the limit may hold the GIL). Every period
# it raises the limit to the trial's own memory now + ``room`` where that is higher (the limit
# follows the trial's running peak, so the page cache keeps its room: room < 0, a fixed limit),
# and once the cgroup is under OOM it lifts the limit and says so.
_WATCH = """
import sys, time
folder, period, room = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
STEP = 1 << 20
def read(name):
    with open(folder + '/' + name) as f:
        return f.read()
print('ready', flush=True)
while 'under_oom 1' not in read('memory.oom_control'):
    limit = int(read('memory.limit_in_bytes'))
    if room >= 0 and limit < 1 << 60:  # set, not yet lifted
        stat = dict(line.split() for line in read('memory.stat').splitlines())
        files = int(stat['total_active_file']) + int(stat['total_inactive_file'])
        own = int(read('memory.usage_in_bytes')) - files
        if own + room > limit:  # raised a MiB over, so that a slow rise says little
            with open(folder + '/memory.limit_in_bytes', 'w') as f:
                f.write(str(own + room + STEP) + '\\n')
            print('limit', own + room + STEP, flush=True)
    time.sleep(period)
with open(folder + '/memory.limit_in_bytes', 'w') as f:
    f.write('-1\\n')
print('oom', flush=True)
"""
_OUT_OF_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'


@dataclass
class Limit:
    """A limit on a trial's memory cgroup, set and lifted; OOM seen, never a kill (v1)."""

    cgroup: TrialCgroup
    bytes: int
    room: int = -1  # the page cache's room kept as the trial's own memory grows; < 0: fixed
    highest: int = 0  # the highest limit the watcher set (0: it never raised it)
    oom: bool = False
    _watcher: subprocess.Popen | None = None
    _oom_kills: int = 0

    def _file(self, name: str) -> Path:
        return self.cgroup.folder / name

    def set(self) -> None:
        """Set the limit (v1: memory.limit_in_bytes, the OOM killer off and a watcher that
        lifts the limit once the cgroup is under OOM; v2: memory.max)."""
        try:
            if self.cgroup.version == "v1":
                self._watch()
                self._file("memory.oom_control").write_text("1\n")
                self._file("memory.limit_in_bytes").write_text(f"{self.bytes}\n")
            else:
                self._oom_kills = self._v2_oom_kills()
                self._file("memory.max").write_text(f"{self.bytes}\n")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            self.oom = True  # v1: the trial's own memory already exceeds it (none reclaimable)

    def _watch(self) -> None:
        code = [sys.executable, "-I", "-S", "-c", _WATCH, str(self.cgroup.folder)]
        self._watcher = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                _OUT_OF_CGROUP,
                "sh",
                str(self.cgroup.parent),
                *code,
                str(WATCH_PERIOD_S),
                str(self.room),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        # out of the cgroup before the limit is set: its start-up is charged elsewhere
        if self._watcher.stdout.readline() != b"ready\n":
            raise TrialError(f"the OOM watcher of {self.cgroup.folder} did not start")

    def _v2_oom_kills(self) -> int:
        for line in self._file("memory.events").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def check(self, where: str) -> None:
        """TrialError where the trial ran out of memory under the limit."""
        if self.cgroup.version == "v2" and self._v2_oom_kills() > self._oom_kills:
            self.oom = True
        if self._watcher is not None and self._watcher.poll() is not None:
            self._said(self._watcher.stdout.read())
        if self.oom:
            raise self.error(where)

    def error(self, where: str, what: str = "") -> TrialError:
        """The TrialError of running out of memory under the limit (``what``: what failed)."""
        return TrialError(
            f"{where}: out of memory under the limit of {self.bytes} bytes "
            f"({self.bytes / 2**20:.0f} MiB) set on {self.cgroup.folder}{what}; the trial "
            "failed, no time recorded (a larger cache_share or margin, or fewer workers)"
        )

    def lift(self) -> None:
        """Lift the limit (before the check after the clock, and on every way out)."""
        try:
            if self.cgroup.version == "v1":
                self._file("memory.limit_in_bytes").write_text("-1\n")
                self._file("memory.oom_control").write_text("0\n")
            else:
                self._file("memory.max").write_text("max\n")
        except OSError:
            pass  # the cgroup is removed with the trial anyway
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher.wait()
            self._said(self._watcher.stdout.read())
            self._watcher.stdout.close()
            self._watcher = None

    def _said(self, text: bytes) -> None:
        """What the watcher printed: each limit it set, and 'oom' as it lifted it."""
        for line in text.decode().splitlines():
            if line == "oom":
                self.oom = True
            elif line.startswith("limit "):
                self.highest = max(self.highest, int(line.split()[1]))


def out_of_memory(exc: BaseException) -> bool:
    """True where an error (or its cause) says memory could not be had: a MemoryError, ENOMEM
    (a worker's shared memory for a batch, refused under the limit rather than waited for)."""
    while exc is not None:
        if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM:
            return True
        if "Cannot allocate memory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def order(n: int, seed: int) -> list[int]:
    """An epoch's order of the n images: a shuffle seeded with ``seed``."""
    out = list(range(n))
    random.Random(seed).shuffle(out)
    return out


def cgroup_of(meter, where: str) -> TrialCgroup:
    """The trial's memory cgroup (imgread.instruments.memory's), or a UserError: a limited
    trial needs one."""
    if meter.cgroup is None:
        raise UserError(
            f"{where}: page_cache limited needs a memory cgroup (cgroup v1 memory or v2 with "
            f"the memory controller, writable by this process); the meter uses {meter.method}"
        )
    return meter.cgroup


def sums(batch):
    """What a limited epoch keeps of a batch: each sample's pixel sum and its label (the
    batch itself is let go: an epoch's batches held would take the page cache's room)."""
    return batch[0].sum(dim=(1, 2, 3)), batch[1]


def flat(results: list) -> tuple[list[float], list[int]]:
    """An epoch's per-sample (sums, labels), from :func:`sums` of each batch."""
    return (
        [float(v) for s, _ in results for v in s.tolist()],
        [int(v) for _, y in results for v in y.tolist()],
    )


def calibrate(runner, jobs: list, cgroup: TrialCgroup) -> tuple[int, float]:
    """The untimed calibration epoch: (its peak less file pages, its seconds)."""
    cgroup.reset()
    t0 = time.perf_counter()
    runner.run(jobs)
    seconds = time.perf_counter() - t0
    return cgroup.peak_added(), seconds


def run_epochs(runner, jobs: list, limit: Limit, plan: dict, where: str) -> tuple:
    """The timed epochs under ``limit``: ([(order, sums, labels)] per epoch, per-epoch dicts)."""
    n, requested, seed = len(jobs), plan["bytes_requested"], plan["shuffle_seed"]
    measured, kept = [], []
    for epoch in range(plan["epochs"]):
        this = order(n, seed + epoch)
        runner.order(this)
        pids = process_tree(os.getpid())
        before = read_bytes(pids)
        t0 = time.perf_counter_ns()
        results = runner.run(jobs)
        seconds = (time.perf_counter_ns() - t0) / 1e9
        got = read_bytes(pids) - before
        limit.check(f"{where} epoch {epoch + 1}")
        kept.append((this, *flat(results)))
        measured.append(
            dict(
                epoch=epoch + 1,
                seconds=seconds,
                images_per_s=n / seconds,
                bytes_requested=requested,
                bytes_read=got,
                cache_hit_ratio=hit_ratio(requested, got),
                images=len(kept[-1][1]),
                **held(limit.cgroup),
            )
        )
    return kept, measured


def held(cgroup: TrialCgroup) -> dict:
    """What the cgroup holds at an epoch's end: its page cache (``cached_bytes``) and the
    rest, the trial's own memory (``own_bytes``)."""
    usage = "memory.usage_in_bytes" if cgroup.version == "v1" else "memory.current"
    files = file_pages(cgroup.version, cgroup.folder)
    total = int((cgroup.folder / usage).read_text())
    return {"cached_bytes": files, "own_bytes": total - files}


def check_epochs(kept: list, reference: tuple[list[float], list[int]], where: str) -> None:
    """Every timed epoch against the check epoch (its pixels verified by the phase): each
    of the n images once, in the epoch's order, with its label and its pixels' sum."""
    ref_sums, ref_labels = reference
    for e, (this, got_sums, got_labels) in enumerate(kept, start=1):
        if len(got_sums) != len(this):
            raise VerificationError(
                f"{where} epoch {e}: {len(got_sums)} samples, expected {len(this)}"
            )
        for j, i in enumerate(this):
            if got_labels[j] != ref_labels[i] or got_sums[j] != ref_sums[i]:
                raise VerificationError(
                    f"{where} epoch {e}: sample {j} (image {i}) differs from the same image "
                    "in the check epoch (label or pixels)"
                )


def fields(plan: dict, measured: list[dict], limit: int, peak: int, calib_s: float) -> dict:
    """The record's columns of a limited trial (docs/limited.md)."""
    return {
        "epochs_measured": measured,
        "steady_images_per_s": steady_rate([m["images_per_s"] for m in measured]),
        "memory_limit_bytes": limit,  # cache_share and epochs: the record's grid keys
        "shuffle_seed": plan["shuffle_seed"],
        "calibration_peak_bytes": peak,
        "calibration_seconds": calib_s,
        "dataset_bytes": plan["bytes_requested"],
    }


def plan_of(params: dict, paths: list[str], repetition: int) -> dict:
    """What a limited trial runs: epochs, cache share, seed, the bytes one epoch asks for."""
    return {
        "epochs": int(params["epochs"]),
        "cache_share": float(params["cache_share"]),
        "shuffle_seed": SEED + repetition,
        "bytes_requested": sum(os.path.getsize(p) for p in paths),
    }


class Limited:
    """A limited trial's steps inside trial.run.time_work: :meth:`calibrate` before the cache
    is proven cold, :meth:`run` as the timed work (its epochs, then the check epoch)."""

    def __init__(self, t, runner, meter) -> None:
        self.where = f"trial {t.spec.describe()}"
        if not hasattr(runner, "order"):
            raise UserError(f"{self.where}: this pipeline takes no epoch order: not limited")
        self.runner, self.cgroup = runner, cgroup_of(meter, self.where)
        self.plan = plan_of(t.ctx.params, t.paths, t.spec.repetition)
        self.fields: dict = {}

    def calibrate(self, jobs: list) -> None:
        """The untimed epoch whose peak sets the limit (module docstring, step 1)."""
        self.runner.reduce = sums
        self.peak, self.calibration_s = calibrate(self.runner, jobs, self.cgroup)
        share, data = self.plan["cache_share"], self.plan["bytes_requested"]
        limit = memory_limit(self.peak, data, share)
        self.limit = Limit(self.cgroup, limit, room=limit - self.peak)

    def run(self, jobs: list) -> list:
        """The timed epochs under the limit (lifted on every way out), then, untimed and
        unlimited, the check epoch in the images' order: its batches, for the phase's check,
        and the timed epochs checked against it."""
        try:
            self.limit.set()
            self.limit.check(f"{self.where} before its first epoch")
            kept, measured = run_epochs(self.runner, jobs, self.limit, self.plan, self.where)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            raise self.limit.error(self.where, f" ({exc})") from exc
        finally:
            self.limit.lift()
        self.runner.reduce = None
        self.runner.order(range(len(jobs)))
        results = self.runner.run(jobs)
        check_epochs(kept, flat([sums(b) for b in results]), self.where)
        self.fields = fields(self.plan, measured, self.limit.bytes, self.peak, self.calibration_s)
        self.fields["memory_limit_max_bytes"] = max(self.limit.bytes, self.limit.highest)
        self.fields["steady_seconds"] = len(jobs) / self.fields["steady_images_per_s"]
        return results
