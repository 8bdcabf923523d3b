"""A failing object store: an HTTP/1.1 proxy in front of the session's nginx that answers a
fraction of requests with ``503 Slow Down``, resets a fraction of connections halfway through
the body, stalls a fraction of responses, and can kill the server at the n-th request.

Run by kind http (imgread.storage.http) inside the session's network namespace when its
profile sets a fault (``fault_503``, ``fault_reset``, ``fault_stall``, ``kill_after``)::

    python -m imgread.storage.http.faultproxy --listen 10.213.0.2:8080 --upstream 127.0.0.1:8081 \
        --log FILE --seed 0 --p503 0.05 --reset 0.02 --stall 0.01 --stall-s 5 --kill-after 0 \
        --kill-pgid PID

nginx still serves every byte (its latency and the veth's bandwidth cap stay as they are); the
proxy only decides, per request in the order requests arrive, what goes wrong, drawing from a
``random.Random(seed)``, so a profile fails the same share of requests on every run. The
probe's files (``/__imgread_probe__/``) are passed through unharmed and not counted.

Every data request is one line of ``--log``: ``<n> <outcome>`` with outcome ``ok``, ``503``,
``reset``, ``stall``, ``killed`` (the request that killed the server), ``dropped`` (read
just before it died, never answered) or ``broken`` (the
exchange broke on either side: the reader went away, nginx did not answer); the session counts
them after the trial (:func:`read_log`). With ``--kill-after N`` the N-th request kills the
server's process group (nginx's master and workers, SIGKILL), aborts every open connection and
closes the listening socket, so that every later request is refused, as a dead host's are.

Written with asyncio streams of the standard library only; bounded: an upstream that does not
answer within ``--upstream-timeout`` seconds closes the client's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import struct
import sys
from collections import Counter

PROBE_PREFIX = b"/__imgread_probe__/"
CHUNK = 256 << 10
SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>\n"
)


class FaultPlan:
    """What goes wrong with the n-th data request: drawn in arrival order from one seeded
    generator, so the same profile fails the same requests' share on every run."""

    def __init__(self, seed: int, p503: float, reset: float, stall: float):
        if min(p503, reset, stall) < 0 or p503 + reset + stall > 1:
            raise ValueError("fault fractions must be >= 0 and sum to at most 1")
        self.rng = random.Random(seed)
        self.edges = (p503, p503 + reset, p503 + reset + stall)

    def next(self) -> str:
        u = self.rng.random()
        if u < self.edges[0]:
            return "503"
        if u < self.edges[1]:
            return "reset"
        if u < self.edges[2]:
            return "stall"
        return "ok"


def read_log(path: str) -> Counter:
    """Outcome -> count of a proxy's log (a killed or missing log counts what it holds)."""
    counts: Counter = Counter()
    with contextlib.suppress(OSError), open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 2:
                counts[parts[1]] += 1
    return counts


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP head (request or response) up to its blank line; None at a clean EOF."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("connection closed inside a head") from None
        return None


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a store's dropped connection arrives."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan = FaultPlan(args.seed, args.p503, args.reset, args.stall)
        self.log = open(args.log, "a", buffering=1)  # noqa: SIM115 (one line per request)
        self.n = 0
        self.killed = False
        self.clients: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None
        host, port = args.upstream.rsplit(":", 1)
        self.upstream = (host, int(port))

    def note(self, n: int, outcome: str) -> None:
        self.log.write(f"{n} {outcome}\n")

    def answered(self, n: int, noted: list[int]) -> None:
        """Log request ``n`` answered whole (and say so in ``noted``)."""
        self.note(n, "ok")
        noted.append(n)

    async def serve(self) -> None:
        host, port = self.args.listen.rsplit(":", 1)
        self.server = await asyncio.start_server(self.client, host, int(port), backlog=4096)
        if self.args.ready:  # listening: the session may send requests
            with open(self.args.ready, "w") as fh:
                fh.write(f"{os.getpid()}\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with self.server:
            await stop.wait()
        self.log.close()

    def kill(self) -> None:
        """The server dies: nginx's process group killed, every connection reset, no more
        listening (later connections are refused)."""
        self.killed = True
        if self.args.kill_pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.args.kill_pgid, signal.SIGKILL)
        if self.server is not None:
            self.server.close()
        for writer in list(self.clients):
            _abort(writer)

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.killed:
            _abort(writer)
            return
        self.clients.add(writer)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self.killed:
                head = await _read_head(reader)
                if head is None:
                    return
                target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                if target.startswith(PROBE_PREFIX):
                    outcome, n = "ok", None
                else:
                    self.n += 1
                    n = self.n
                    if self.args.kill_after and n >= self.args.kill_after:
                        # requests read before the kill reached them die with the server
                        self.note(n, "dropped" if self.killed else "killed")
                        if not self.killed:
                            self.kill()
                        _abort(writer)
                        return
                    outcome = self.plan.next()
                if outcome == "503":
                    self.note(n, outcome)
                    writer.write(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        b"Retry-After: 1\r\nContent-Length: "
                        + str(len(SLOW_DOWN_BODY)).encode()
                        + b"\r\n\r\n"
                        + SLOW_DOWN_BODY
                    )
                    await writer.drain()
                    continue
                if outcome == "stall":
                    self.note(n, outcome)
                    await asyncio.sleep(self.args.stall_s)
                if up is None:
                    up = await asyncio.wait_for(
                        asyncio.open_connection(*self.upstream), self.args.upstream_timeout
                    )
                # an answered request is logged before its last bytes leave: a client that
                # has its body and reads the counts at once finds it counted
                noted: list[int] = []
                answered = n is not None and outcome == "ok"
                done = functools.partial(self.answered, n, noted) if answered else None
                try:
                    await self.relay(head, up, writer, outcome, done)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    # a request whose fate was already logged (a stall whose reader gave up,
                    # a reset, an answer sent whole) is not counted twice
                    if done is not None and not noted:
                        self.note(n, "broken")
                    raise
                if outcome == "reset":
                    self.note(n, outcome)
                    _abort(writer)
                    return
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            _abort(writer)
        finally:
            self.clients.discard(writer)
            if up is not None:
                up[1].transport.abort()
            with contextlib.suppress(Exception):
                writer.close()

    async def relay(self, head, up, writer, outcome: str, done=None) -> None:
        """Send the request upstream and its response back (half its body where it is reset);
        ``done()`` is called once the whole answer is in hand, before its last bytes are sent."""
        up_reader, up_writer = up
        up_writer.write(head)
        await up_writer.drain()
        timeout = self.args.upstream_timeout
        answer = await asyncio.wait_for(_read_head(up_reader), timeout)
        if answer is None:
            raise ConnectionError("upstream closed the connection")
        # a HEAD's answer (the S3 clients' HEAD Object) has a Content-Length and no body
        length = 0 if head.startswith(b"HEAD ") else _content_length(answer)
        send = length // 2 if outcome == "reset" else length
        if not length and done is not None:
            done()
        writer.write(answer)
        left, sent = length, 0
        while left:
            data = await asyncio.wait_for(up_reader.read(min(CHUNK, left)), timeout)
            if not data:
                raise ConnectionError("upstream closed inside a body")
            left -= len(data)
            if not left and done is not None:
                done()
            if sent < send:
                part = data[: send - sent]
                writer.write(part)
                sent += len(part)
                await writer.drain()
        await writer.drain()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m imgread.storage.http.faultproxy")
    ap.add_argument("--listen", required=True, help="address:port to accept clients on")
    ap.add_argument("--upstream", required=True, help="nginx's address:port")
    ap.add_argument("--log", required=True, help="one line per data request")
    ap.add_argument("--ready", default=None, help="file written once listening")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p503", type=float, default=0.0)
    ap.add_argument("--reset", type=float, default=0.0)
    ap.add_argument("--stall", type=float, default=0.0)
    ap.add_argument("--stall-s", type=float, default=5.0)
    ap.add_argument("--kill-after", type=int, default=0)
    ap.add_argument("--kill-pgid", type=int, default=0)
    ap.add_argument("--upstream-timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    try:
        asyncio.run(Proxy(args).serve())
    except ValueError as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
