"""The stream phase's producers: how frames are read and decoded ahead of the consumer.

Frame i arrives at ``i / fps`` after the start (fps 0: all at once; with ``streams`` N, the N
phase-aligned frames of each tick together at ``(i // N) / fps``: :func:`arrivals`) and cannot
be read before it arrives. A producer reads and decodes frames (the decoder's 224 crop) with at
most ``prefetch`` frames a stream produced ahead of the consumer, which runs the emulated model
on each, in arrival order: ``sleep`` (an accelerator: no CPU, the GIL released) or ``cpu``
(numpy work holding a core). Producers: :class:`SequentialStream` (inline, the baseline),
:class:`ProcessesStream` (``multiprocessing.Pool`` ``apply_async``), :class:`ThreadsStream`
(a bounded pool feeding a ``queue.Queue``), :class:`ThreadPerFrameStream` (one thread per
frame, joined at the end) and :class:`AsyncioStream` (``aiofiles`` read, ``asyncio.to_thread``
decode and model).

Process workers run this module's functions, pickled by their module path: it imports no
phase, so a 'spawn' or 'forkserver' worker loads only the decoders.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing as mp
import queue
import threading
import time
from multiprocessing import pool as mp_pool

import aiofiles
import numpy as np

from imgread.decoders import DECODERS, warm_up
from imgread.trial import pools
from imgread.trial.pools import Runner, thread_pool

COMPUTE_KINDS = ("sleep", "cpu")


def decode_frame(decoder: str, path: str, opener=None) -> tuple[np.ndarray, float]:
    """Read (from the trial's storage, imgread.storage; the file where it is without one) and
    decode one frame to the 224 crop; return it and when reading began."""
    start = time.perf_counter()
    if opener is None:
        with open(path, "rb") as fh:
            data = fh.read()
    else:
        data = opener.read(path)
    return DECODERS[decoder].decode(data, "crop224"), start


_BURN = np.linspace(0.0, 1.0, 1 << 16, dtype=np.float32)


def run_model(kind: str, seconds: float) -> None:
    """The emulated model: sleep, or busy numpy work on one core, for ``seconds``."""
    if seconds <= 0:
        return
    if kind == "sleep":
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    out = np.empty_like(_BURN)
    while time.perf_counter() < end:
        np.sin(_BURN, out=out)  # ~0.1 ms a call; numpy releases the GIL inside


def _wait_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def arrivals(n: int, fps: int, streams: int = 1) -> list[float]:
    """The one arrival schedule every producer follows, in seconds from the start: ``streams``
    phase-aligned sources at ``fps`` each, so frames ``k*streams .. k*streams+streams-1`` (one
    of each stream) arrive together at ``k / fps``; fps 0: all at once."""
    return [(i // streams) / fps if fps else 0.0 for i in range(n)]


class _Clock:
    """Arrival times of a trial's frames (:func:`arrivals`), fixed when the stream starts."""

    def __init__(self, n: int, fps: int, streams: int = 1):
        self.t0 = time.perf_counter()
        self.arrival = [self.t0 + a for a in arrivals(n, fps, streams)]

    def since_start(self, i: int, start: float, ready: float, done: float) -> tuple:
        """Frame i's (arrival, start, ready, done), in seconds from the stream's start."""
        return (self.arrival[i] - self.t0, start - self.t0, ready - self.t0, done - self.t0)


class StreamRunner(Runner):
    """Shared consumer loop; subclasses produce frame i with ``get(i)`` after ``submit``."""

    def __init__(self, workers: int, p: dict, opener=None):
        self.concurrency = workers
        self.decoder, self.kind = p["decoder"], p["compute"]
        self.compute_s = int(p["compute_ms"]) / 1e3
        self.fps, self.streams = int(p["fps"]), int(p.get("streams", 1))
        # prefetch is per stream: each camera's own buffer, so that N streams are not
        # throttled by one stream's buffer (streams 1: prefetch frames, as before)
        self.prefetch = int(p["prefetch"]) * self.streams
        self.opener = opener  # the trial's storage (None: the files where they are)
        warm_up(self.decoder, "crop224")
        run_model(self.kind, 0.001)

    def run(self, jobs):
        n = len(jobs)
        clock = _Clock(n, self.fps, self.streams)
        self.start_stream(jobs, clock)
        frames, rows = [], []
        try:
            for i in range(n):
                frame, start = self.get(i)
                ready = time.perf_counter()
                self.model()
                done = time.perf_counter()
                self.consumed(i)
                frames.append(frame)
                rows.append(clock.since_start(i, start, ready, done))
        finally:
            self.stop_stream()
        return {"frames": frames, "times": rows, "paths": [j.path for j in jobs]}

    def model(self) -> None:
        run_model(self.kind, self.compute_s)

    # hooks
    def start_stream(self, jobs, clock): ...

    def get(self, i): ...

    def consumed(self, i) -> None: ...

    def stop_stream(self) -> None: ...


class SequentialStream(StreamRunner):
    """Read, decode and compute inline, each frame when it arrives."""

    def start_stream(self, jobs, clock):
        self.jobs, self.clock = jobs, clock

    def get(self, i):
        _wait_until(self.clock.arrival[i])
        return decode_frame(self.decoder, self.jobs[i].path, self.opener)


class _Dispatched(StreamRunner):
    """A dispatcher thread hands frame i to the producer when it has arrived and fewer than
    ``prefetch`` frames are produced ahead of the consumer."""

    def start_stream(self, jobs, clock):
        self.slots = [None] * len(jobs)
        self.ready = [threading.Event() for _ in jobs]
        self.room = threading.Semaphore(self.prefetch)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

        def dispatch():
            for i, job in enumerate(jobs):
                while not self.room.acquire(timeout=0.1):
                    if self.stopping.is_set():
                        return
                _wait_until(clock.arrival[i])
                if self.stopping.is_set():
                    return
                try:
                    self.produce(i, job.path)
                except BaseException as exc:  # surfaced to the consumer by get()
                    self.fail(exc)
                    return

        self.dispatcher = threading.Thread(target=dispatch, name="imgread-dispatch", daemon=True)
        self.dispatcher.start()

    def fail(self, exc: BaseException) -> None:
        self.error = self.error or exc
        for e in self.ready:
            e.set()

    def deliver(self, i, result) -> None:
        self.slots[i] = result
        self.ready[i].set()

    def get(self, i):
        while not self.ready[i].wait(0.1):  # a timed wait stays interruptible by Ctrl-C
            self.check_workers()
        if self.error is not None:
            raise self.error
        result, self.slots[i] = self.slots[i], None
        return result

    def check_workers(self) -> None:
        """Raise if a worker died (producers whose workers can die override this)."""

    def consumed(self, i):
        self.room.release()

    def stop_stream(self):
        self.stopping.set()
        self.dispatcher.join()


class ThreadsStream(_Dispatched):
    """A bounded thread pool; finished frames go through a ``queue.Queue`` to the consumer."""

    def __init__(self, workers, p, opener=None):
        super().__init__(workers, p, opener)
        self.pool = thread_pool(workers, "imgread-stream")
        self.queue: queue.Queue = queue.Queue()

    def produce(self, i, path):
        def work():
            try:
                self.queue.put((i, decode_frame(self.decoder, path, self.opener), None))
            except BaseException as exc:
                self.queue.put((i, None, exc))

        self.pool.submit(work)

    def get(self, i):
        while self.slots[i] is None:  # reorder: frames may finish out of order
            try:
                j, result, exc = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.error is not None:  # the dispatcher itself failed
                    raise self.error from None
                continue
            if exc is not None:
                raise exc
            self.slots[j] = result
        result, self.slots[i] = self.slots[i], None
        return result

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class ThreadPerFrameStream(_Dispatched):
    """The seed's second recipe: one new thread per frame (at most ``prefetch`` alive)."""

    def produce(self, i, path):
        def work():
            try:
                self.deliver(i, decode_frame(self.decoder, path, self.opener))
            except BaseException as exc:
                self.fail(exc)

        t = threading.Thread(target=work, name=f"imgread-frame-{i}", daemon=True)
        self.threads.append(t)
        t.start()

    def start_stream(self, jobs, clock):
        self.threads: list[threading.Thread] = []
        super().start_stream(jobs, clock)

    def stop_stream(self):
        super().stop_stream()
        for t in self.threads:  # "join all"
            t.join()


class ProcessesStream(_Dispatched):
    """The seed's first recipe: ``multiprocessing.Pool(workers).apply_async`` per frame."""

    def __init__(self, workers, p, opener=None):
        super().__init__(workers, p, opener)
        ctx = mp.get_context()
        barrier = ctx.Barrier(workers)
        init = (barrier, warm_up, (self.decoder, "crop224"))
        self.pool = ctx.Pool(workers, pools.init_process, init)
        # The workers it started: Pool replaces a dead one silently, and the frame it held is
        # lost; the trial fails instead (check_workers).
        self.workers = list(self.pool._pool)
        try:
            # Every worker started and warmed up before the clock: one task each, held until
            # all have one. A worker whose warm-up failed reports it there.
            tasks = [self.pool.apply_async(pools.process_rendezvous) for _ in range(workers)]
            pools.settle([functools.partial(self._wait, t) for t in tasks], workers)
        except BaseException:
            self.broken = True
            self.close()
            raise
        self.fn = functools.partial(decode_frame, self.decoder, opener=self.opener)

    def _wait(self, task) -> int:
        deadline = time.monotonic() + pools.RENDEZVOUS_TIMEOUT_S
        while not task.ready() and time.monotonic() < deadline:
            task.wait(0.1)
            self.check_workers()
        return task.get(0)

    def produce(self, i, path):
        self.pool.apply_async(
            self.fn, (path,), callback=lambda r, i=i: self.deliver(i, r), error_callback=self.fail
        )

    def get(self, i):
        self.check_workers()  # a few microseconds: one non-blocking waitpid per worker
        return super().get(i)

    def check_workers(self):
        cause = pools.death_of(self.workers, "stream worker process")
        if cause:
            self.broken = True
            raise pools.WorkerDied(cause)

    def close(self):
        if not getattr(self, "broken", False) and pools.death_of(self.workers) is None:
            self.pool.terminate()
            self.pool.join()
            return
        # A worker killed while it held the pool's task-queue lock (an idle worker waits for
        # a task holding it) makes Pool.terminate() wait for that lock forever (a known
        # multiprocessing.Pool hazard). So: stop the pool's respawning of workers (woken at
        # once), kill the workers, and cancel its terminate finalizer.
        self.pool._worker_handler._state = mp_pool.TERMINATE
        self.pool._state = mp_pool.TERMINATE
        self.pool._change_notifier.put(None)
        self.pool._worker_handler.join(5)
        pools.kill_all([*self.workers, *self.pool._pool])
        self.pool._terminate.cancel()


class AsyncioStream(StreamRunner):
    """The seed's third recipe: aiofiles reads, ``asyncio.to_thread`` decodes and runs the
    model; the loop's default executor has ``workers`` threads (started before the clock)."""

    def __init__(self, workers, p, opener=None):
        super().__init__(workers, p, opener)
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(thread_pool(workers, "imgread-aio"))
        self.reader = None  # the storage's asyncio reader, made before the clock

        async def open_reader():
            return self.opener.async_reader(0)

        if self.opener is not None:
            self.reader = self.loop.run_until_complete(open_reader())

    def run(self, jobs):
        return self.loop.run_until_complete(self._run(jobs))

    async def _run(self, jobs):
        n = len(jobs)
        clock = _Clock(n, self.fps, self.streams)
        room = asyncio.Semaphore(self.prefetch)
        futures = [self.loop.create_future() for _ in jobs]
        reader = self.reader

        async def produce(i, path):
            await asyncio.sleep(max(0.0, clock.arrival[i] - time.perf_counter()))
            start = time.perf_counter()
            if reader is None:
                async with aiofiles.open(path, "rb") as fh:
                    data = await fh.read()
            else:  # the storage's asyncio reader (aiofiles for local files, aiohttp for http)
                data = await reader.read(path)
            frame = await asyncio.to_thread(DECODERS[self.decoder].decode, data, "crop224")
            return frame, start

        tasks: list[asyncio.Task] = []

        def settle(t: asyncio.Task, i: int) -> None:
            if t.cancelled() or futures[i].done():
                return
            if t.exception() is not None:
                futures[i].set_exception(t.exception())
            else:
                futures[i].set_result(t.result())

        async def producer():
            for i, job in enumerate(jobs):
                await room.acquire()
                task = asyncio.ensure_future(produce(i, job.path))
                task.add_done_callback(functools.partial(settle, i=i))
                tasks.append(task)

        feeder = asyncio.ensure_future(producer())
        frames, rows = [], []
        try:
            for i in range(n):
                frame, start = await futures[i]
                ready = time.perf_counter()
                await asyncio.to_thread(self.model)
                done = time.perf_counter()
                room.release()
                frames.append(frame)
                rows.append(clock.since_start(i, start, ready, done))
        finally:
            feeder.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(feeder, *tasks, return_exceptions=True)
            for f in futures:  # a frame's error nobody awaited is not an unhandled error
                if f.done() and not f.cancelled():
                    f.exception()
        return {"frames": frames, "times": rows, "paths": [j.path for j in jobs]}

    def close(self):
        if self.reader is not None:
            self.loop.run_until_complete(self.reader.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
