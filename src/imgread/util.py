"""Small helpers shared by the package: atomic writes and a progress line."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    A reader (or Snakemake) never sees a half-written file under the final name, even if the
    process is killed mid-write: the temporary name is hidden and removed on any exception.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    # mkstemp makes the file 0600; a results file should be what open() would have made
    # (0644 under umask 022), so a colleague or a web server can read it.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (temporary file, then rename)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(
    dest: str | os.PathLike, obj, indent: int | None = 2, newline: bool = True
) -> None:
    """Write ``obj`` as JSON to ``dest`` atomically: the project's one way to write a JSON file
    (``newline``: end it with one)."""
    write_text_atomic(dest, json.dumps(obj, indent=indent) + ("\n" if newline else ""))


class Progress:
    """A progress line on stderr: count, percentage, rate and ETA, throttled to a few updates/s.

    On a terminal it redraws one line; in a log (not a tty) it prints a line every 10 %.
    """

    def __init__(self, total: int, label: str, stream=None, enabled: bool = True):
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._last_decile = -1
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done and redraw if due."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self._tty:
            if now - self._last >= 0.2 or self.done >= self.total:
                self._last = now
                self.stream.write("\r" + self._line(now))
                if self.done >= self.total:
                    self.stream.write("\n")
                self.stream.flush()
        else:
            decile = (10 * self.done) // self.total if self.total else 10
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line(now) + "\n")
                self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = now - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (
            f"{self.label}: {self.done}/{self.total} ({pct:5.1f} %), "
            f"{rate:.1f}/s, elapsed {elapsed:.0f} s, ETA {eta:.0f} s"
        )


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that ``finally`` blocks run (temporary files removed,
    pools shut down) as they do for Ctrl-C. Python's default would end the process at once."""
    signal.signal(signal.SIGTERM, _exit_on_signal)


def end_on_sigterm() -> None:
    """In a worker process: SIGTERM ends it, as by default. A forked worker inherits the
    command's :func:`exit_on_sigterm` handler, whose SystemExit a pool would catch and send
    back as a task's result, so a worker told to end would live on until the pool shut down."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def without_later_defaults(settings: dict, later: dict) -> dict:
    """``settings`` less the settings added later (``later``: {name: default}) that are at
    their default: what a rule depends on stays as it was before they existed, so Snakemake
    does not rerun what was made then (datasets, storage profiles' trials)."""
    return {k: v for k, v in settings.items() if not (k in later and v == later[k])}
