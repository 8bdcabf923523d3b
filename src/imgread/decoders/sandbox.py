"""Decode untrusted files where a crash cannot take the caller down: a child process, with a
time limit per file, a memory limit (RLIMIT_DATA) and a pixel cap read from the header before
any pixel is decoded.

A decoder written in C can crash the process that calls it (a segfault or an abort is not an
exception). The child decodes one file at a time and says which file it starts before it
starts, so a child that dies, or runs past the time limit, is blamed on exactly that file; a
fresh child goes on with the next one. Every file gets one :class:`Outcome` per decoder:

- ``ok``: decoded to H x W x 3 uint8 with the header's size;
- ``refused``: the decoder raised (its message names the file and the decoder);
- ``unsupported``: a format the decoder does not read (not a fault of the file);
- ``too-large``: the header claims more than ``max_pixels`` (nothing decoded);
- ``crashed``: the child died (the signal or exit code says how);
- ``timeout``: the decoder ran past ``timeout_s``;
- ``out-of-memory``: the decoder ran out of the memory limit (MemoryError in the child).

A decoder is a name of the registry (``pillow``, ``opencv`` ...) or a "module:function" path
of a function ``(path, output) -> array`` (a test decoder, or a library being tried).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MEMORY_BYTES = 4 << 30  # the child's data (heap, buffers): a 12 MP image's fit
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP; a 12 MP phone photo is well under
BAD = ("refused", "crashed", "timeout", "too-large", "out-of-memory")


@dataclass(frozen=True)
class Outcome:
    """What one decoder did with one file."""

    path: str
    decoder: str
    status: str
    message: str = ""
    size: tuple[int, int] | None = None  # (width, height) decoded, for ``ok``

    @property
    def bad(self) -> bool:
        """Whether the file is at fault for this decoder (not ``ok``, not ``unsupported``)."""
        return self.status in BAD


# -- the child: reads "path<TAB>decoder" lines, answers one JSON line per file ----------------


def _decode_fn(name: str):
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    from imgread.decoders import get_decoder

    return get_decoder(name).decode


def _header_pixels(path: str) -> int | None:
    from PIL import Image

    cap, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our cap, not Pillow's warning
    try:
        with Image.open(path) as img:  # reads the header only
            return img.size[0] * img.size[1]
    except Exception:
        return None  # the decoder will say what is wrong with it
    finally:
        Image.MAX_IMAGE_PIXELS = cap


def _child_one(path: str, name: str, output: str, max_pixels: int) -> dict:
    from imgread.decoders import UnsupportedFormatError

    pixels = _header_pixels(path)
    if pixels is not None and pixels > max_pixels:
        return {"status": "too-large", "message": f"{path}: header claims {pixels} pixels"}
    try:
        rgb = _decode_fn(name)(path, output)
    except UnsupportedFormatError as exc:
        return {"status": "unsupported", "message": str(exc)}
    except ImportError as exc:  # the decoder's library, not the file: nothing is judged
        return {"status": "unavailable", "message": f"{path}: decoder {name}: {exc}"}
    except MemoryError:
        return {"status": "out-of-memory", "message": f"{path}: decoder {name}: MemoryError"}
    except Exception as exc:
        text = str(exc) if path in str(exc) else f"{path}: decoder {name}: {exc}"
        return {"status": "refused", "message": f"{type(exc).__name__}: {text}"}
    if getattr(rgb, "ndim", 0) != 3 or rgb.shape[2] != 3 or str(rgb.dtype) != "uint8":
        got = f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}"
        return {"status": "refused", "message": f"{path}: decoder {name} returned {got}"}
    size = [int(rgb.shape[1]), int(rgb.shape[0])]
    return {"status": "ok", "message": f"{size[0]}x{size[1]}", "size": size}


def _child(output: str, max_pixels: int) -> None:
    import imgread.decoders  # noqa: F401  (imported before the first file's clock)

    out = sys.stdout
    for line in sys.stdin:
        path, name = line.rstrip("\n").split("\t")
        out.write("start\n")
        out.flush()
        out.write(json.dumps(_child_one(path, name, output, max_pixels)) + "\n")
        out.flush()


# -- the parent ---------------------------------------------------------------------------------


def _limits(memory_bytes: int):
    def apply():
        # RLIMIT_DATA (the heap and private writable mappings, where a decoder's buffers go),
        # not RLIMIT_AS: a library's read-only code mappings, gigabytes for a CUDA build of
        # TensorFlow, DALI or torch, would make its import fail ("failed to map segment")
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file

    return apply


class _Child:
    """One sandbox process; replaced after a crash or a timeout."""

    def __init__(self, output: str, memory_bytes: int, max_pixels: int, env: dict | None):
        cmd = [sys.executable, "-m", "imgread.decoders.sandbox", "--child", output, str(max_pixels)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            preexec_fn=_limits(memory_bytes),
            env={**os.environ, **(env or {})},
        )
        self.pending = b""

    def _line(self, deadline: float) -> str | None:
        """The child's next line; "" if it closed its end, None past the deadline. Read from
        the descriptor with a buffer of our own: select() cannot see lines a file object has
        already buffered, and would wait out the deadline for an answer that has come."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode("utf-8") + "\n"

    def ask(self, path: str, name: str, timeout_s: float) -> dict:
        """The child's answer for one file, or what became of it."""
        try:
            self.proc.stdin.write(f"{path}\t{name}\n".encode())
        except BrokenPipeError:
            return self._died(path, name)
        # the child may still be importing its libraries: its "start" has a generous wait
        started = self._line(time.monotonic() + max(timeout_s, 60.0))
        if started != "start\n":
            return self._died(path, name)
        answer = self._line(time.monotonic() + timeout_s)
        if answer is None:
            self.kill()
            if self.proc.returncode not in (None, -signal.SIGKILL):
                return self._died(path, name)
            return {"status": "timeout", "message": f"{path}: decoder {name}: over {timeout_s} s"}
        if not answer:
            return self._died(path, name)
        return json.loads(answer)

    def _died(self, path: str, name: str) -> dict:
        code = self.proc.wait()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return {"status": "crashed", "message": f"{path}: decoder {name}: the process died ({how})"}

    def kill(self) -> None:
        """End the child (a crash may have ended it already)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class Sandbox:
    """A sandbox child kept between files (started on first use, replaced after a crash or a
    timeout), for a caller that checks files one at a time; use it as a context manager."""

    def __init__(
        self,
        output: str = "full",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        env: dict | None = None,
    ):
        self.output, self.timeout_s, self.env = output, timeout_s, env
        self.memory_bytes, self.max_pixels = memory_bytes, max_pixels
        self.child: _Child | None = None

    def start(self) -> Sandbox:
        """Start the child now (else on the first file)."""
        if self.child is None:
            self.child = _Child(self.output, self.memory_bytes, self.max_pixels, self.env)
        return self

    def check(self, path: str | os.PathLike, decoders: Sequence[str]) -> list[Outcome]:
        """One Outcome per decoder for ``path``."""
        out = []
        for name in decoders:
            answer = self.start().child.ask(str(path), name, self.timeout_s)
            size = tuple(answer["size"]) if answer.get("size") else None
            out.append(Outcome(str(path), name, answer["status"], answer["message"], size))
            if answer["status"] in ("crashed", "timeout"):
                self.close()
        return out

    def close(self) -> None:
        """End the child, if one is running."""
        if self.child is not None:
            self.child.kill()
            self.child = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_files(
    paths: Iterable[str | os.PathLike],
    decoders: Sequence[str],
    output: str = "full",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    env: dict | None = None,
) -> list[Outcome]:
    """Every file decoded by every decoder in a sandbox; one Outcome each, in order."""
    with Sandbox(output, timeout_s, memory_bytes, max_pixels, env) as box:
        return [o for path in paths for o in box.check(path, decoders)]


def summary(outcomes: Iterable[Outcome]) -> dict[str, dict[str, int]]:
    """{decoder: {status: count}} of a check."""
    out: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts = out.setdefault(o.decoder, {})
        counts[o.status] = counts.get(o.status, 0) + 1
    return out


def as_rows(outcomes: Iterable[Outcome]) -> list[dict]:
    """The outcomes as plain dicts (for a CSV or JSON)."""
    return [asdict(o) for o in outcomes]


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _child(sys.argv[2], int(sys.argv[3]))
