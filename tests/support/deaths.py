"""A trial's worker dying, for the tests: kill one (SIGKILL, what the out-of-memory killer
sends) or make every worker fail as it starts, time the trial's end from the death, and check
that it failed naming the cell and the cause, leaving no process, shared-memory segment or
file behind."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .helpers import SHM, children, kill_session

# Python's segments, PyTorch's, and multiprocessing's named semaphores
SHM_PREFIXES = ("psm_", "torch_", "sem.mp-", "mp-")


def shm_entries() -> set[str]:
    """The shared-memory segments a trial could leave in /dev/shm."""
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if p.name.startswith(SHM_PREFIXES)}


def held_segments() -> set[str]:
    """The names in /dev/shm that a live process has mapped or open."""
    held = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            maps = (proc / "maps").read_text()
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
        paths = [line.split(None, 5)[-1] for line in maps.splitlines()] + fds
        held.update(p[len("/dev/shm/") :].split(" ")[0] for p in paths if p.startswith("/dev/shm/"))
    return held


def new_segments(before: set[str], grace: float = 2.0) -> set[str]:
    """Segments made since ``before`` that no live process holds, still there after up to
    ``grace`` seconds: left behind (another test's, in use, are not counted)."""
    deadline = time.monotonic() + grace
    while (new := shm_entries() - before - held_segments()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return new


# A prelude under which every worker fails as it starts: the decoder cannot be imported in a
# process-pool worker (its initializer's warm-up raises), and a DataLoader worker's
# worker_init_fn raises. The trial's own process is untouched.
WORKERS_FAIL_TO_START = """
import os
import imgread.decoders.registry as decoders
import imgread.phases.dataloader.pipelines.torch_loader as dataloader
_parent, _get_decoder = os.getpid(), decoders.get_decoder
def get_decoder(name):
    if os.getpid() != _parent:
        raise ImportError(f"no module for the {name} decoder in this worker (test)")
    return _get_decoder(name)
def worker_init(worker_id):
    raise ImportError("no module for the decoder in this worker (test)")
decoders.get_decoder = get_decoder
dataloader._worker_init = worker_init
"""


# --------------------------------------------------------------------------- a worker's death

EXIT_BOUND_S = 10.0  # a trial whose worker died must have ended this soon after the death
HANG_S = 120.0  # a trial still running this long after is hung: dumped, killed, failed


@dataclass
class Ended:
    """How a trial ended: exit status, stderr, and seconds from the death to its exit."""

    rc: int
    stderr: str
    seconds: float


def kill_worker(proc: subprocess.Popen, workers: list[int]) -> Ended:
    """SIGKILL the first worker (the signal the out-of-memory killer sends, too); how the
    trial ended, timed from the kill."""
    pidfd = os.pidfd_open(proc.pid)
    since = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    return wait_ended(proc, pidfd, since)


def first_child(proc: subprocess.Popen) -> tuple[int, float]:
    """(a pidfd of the trial, when it first had a child process): from then on its workers
    can fail to start (the start of the trial if it ended before any was seen)."""
    pidfd, since = os.pidfd_open(proc.pid), time.monotonic()
    while proc.poll() is None and not children(proc.pid):
        time.sleep(0.005)
    return pidfd, time.monotonic() if proc.returncode is None else since


def wait_ended(proc: subprocess.Popen, pidfd: int, since: float) -> Ended:
    """Wait for the trial's exit (its output drained meanwhile) and time it from ``since``. A
    trial still running after HANG_S is dumped with py-spy and killed; one whose output stays
    open after its exit has left a process behind: either fails the test."""
    output: list = []
    reader = threading.Thread(target=lambda: output.extend(proc.communicate()), daemon=True)
    reader.start()
    try:
        hung = not select.select([pidfd], [], [], HANG_S)[0]
        seconds = time.monotonic() - since
    finally:
        os.close(pidfd)
    if hung:
        dump = py_spy_dump(proc.pid)
    reader.join(0 if hung else 10)
    if reader.is_alive():
        left = session_processes(proc.pid)
        kill_session(proc)
        reader.join()
        if hung:
            raise AssertionError(f"the trial did not end within {HANG_S:.0f} s:\n{dump}")
        raise AssertionError(f"the trial ended but left processes holding its output: {left}")
    return Ended(proc.returncode, output[1], seconds)


def py_spy_dump(pid: int) -> str:
    """The Python stacks of ``pid`` (py-spy, where installed), to see where a trial hangs."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return "(py-spy is not installed)"
    r = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True)
    return r.stdout + r.stderr


def session_processes(sid: int) -> list[str]:
    """'PID command' of every live process in session ``sid`` (a trial started by
    start_trial and everything it started: workers, their replacements, helpers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{stat.parent.name} {cmdline[:120]}")
    return found


def leftovers(proc: subprocess.Popen, grace: float = 3.0) -> list[str]:
    """Processes of the trial's session still alive ``grace`` s after it ended (multiprocessing's
    resource tracker ends on its own when the trial does); killed, and returned."""
    deadline = time.monotonic() + grace
    while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_session(proc)
    return left


def files_left(out: Path, tmpdir: Path | None) -> list[str]:
    """The trial's record, or its temporary file beside it, and anything in its TMPDIR."""
    found = [p.name for p in out.parent.glob(f"*{out.name}*")] if out.parent.exists() else []
    return found + ([str(p) for p in tmpdir.rglob("*")] if tmpdir is not None else [])


def assert_failed_cleanly(
    ended: Ended, proc, out: Path, tmpdir: Path | None, shm_before: set[str], *says: str
) -> None:
    """The trial failed (status 1) within EXIT_BOUND_S of the death, its error says each of
    ``says`` (the cell, the cause), and it left no process, segment or file behind."""
    print(f"the trial ended {ended.seconds:.2f} s after the death")  # pytest -s: the timings
    left = leftovers(proc)
    assert ended.rc == 1, ended.stderr
    assert ended.seconds < EXIT_BOUND_S, f"the trial ended {ended.seconds:.1f} s after the death"
    for text in says:
        assert text in ended.stderr, f"{text!r} not in:\n{ended.stderr}"
    assert "imgread: trial failed: trial " in ended.stderr, ended.stderr  # not a traceback
    assert not left, f"processes left running: {left}"
    assert not (shm_left := new_segments(shm_before)), f"left in /dev/shm: {shm_left}"
    assert not files_left(out, tmpdir), f"files left: {files_left(out, tmpdir)}"
