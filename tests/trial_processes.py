"""Run `imgread trial` as a real process, find its worker processes, and kill one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HAVE_PROC = Path("/proc/self/task").exists()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return kids


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def is_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker is a child too; it is not a pool worker."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def trial_command(manifest, out, *args: str) -> list[str]:
    """``imgread trial --manifest M ARGS --out OUT`` as an argument list."""
    return [
        sys.executable, "-m", "imgread", "trial", "--manifest", str(manifest), *args,
        "--out", str(out),
    ]  # fmt: skip


def run_trial_cli(manifest, out, *args: str, check: bool = False):
    """Run ``imgread trial`` to its end; the CompletedProcess, output captured as text."""
    return subprocess.run(
        trial_command(manifest, out, *args), capture_output=True, text=True, check=check
    )


def start_trial(manifest, out, *args: str) -> subprocess.Popen:
    """``imgread trial`` started in its own process group (as a terminal starts a command),
    output captured."""
    return subprocess.Popen(
        trial_command(manifest, out, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_workers(
    proc: subprocess.Popen,
    settle: float,
    want: int = 2,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 90,
) -> list[int]:
    """Wait until ``proc`` has ``want`` live workers (and ``ready()``), then ``settle`` seconds
    more, into the timed work; return the workers alive then (children seen early may be
    short-lived helpers that libraries start). Fails if the trial already ended."""

    def live() -> list[int]:
        return [k for k in children(proc.pid) if alive(k) and not is_tracker(k)]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(live()) >= want and ready():
            break
        time.sleep(0.02)
    assert len(live()) >= want and ready(), "the trial never started its workers"
    time.sleep(settle)
    workers = live()
    assert proc.poll() is None, "the trial ended before it could be interrupted"
    assert len(workers) >= want, f"only {len(workers)} workers alive after {settle} s"
    return workers


def kill_worker(proc: subprocess.Popen, workers: list[int]) -> tuple[int, str]:
    """SIGKILL the first worker; return the trial's exit status and stderr."""
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def left_alive(workers: list[int]) -> list[int]:
    """Workers still running a moment after the trial ended."""
    time.sleep(0.3)
    return [w for w in workers if alive(w)]
