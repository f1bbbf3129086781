"""Dynamic batching: per model version, FIFO queue → batches of equal-shape requests → N inference instances.

A batch is formed only when an instance is free, so while instances are busy the queue grows and the next
batch is bigger ("natural" batching); an idle instance waits at most `max_queue_delay_ms` after the oldest
request arrived for more requests to join; while several instances are idle, they share the queue's head
evenly. A batch is always a prefix of the queue, so no request ever waits
behind one that arrived after it; requests whose tensors differ in shape or type never share a batch. A `solo`
instance (one spreading a batch over every core) takes only a batch that would otherwise run alone.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from kakehashi.errors import DeadlineExceeded, Overloaded, Unavailable

log = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]
DRAIN_SECONDS = 30.0
RunBatch = Callable[[int, Feeds], Feeds]
EWMA_WEIGHT = 0.1  # of the newest batch in the moving averages of batch time and rows
# what a round trip from the event loop to a thread and back costs a request: on this project's 2-core machine a bare
# one takes 0.1-0.17 ms (median) from an idle loop, 0.07-0.13 ms of it the loop's own CPU; in the server, where each
# hop also hands the GIL over and back, a tiny model's request took 1.43 ms in-process with its two hops (to the
# compute pool, to the instance) and 0.75 ms without. Work that usually takes less runs on the loop instead
HOP_SECONDS = 300e-6
_COSTS_KEPT = 64  # request shapes whose cost per row is remembered (forgotten all at once beyond)


@dataclass(frozen=True)
class BatchResult:
    """One request's share of a batch run: its output rows and where its time went (seconds)."""

    outputs: Feeds
    queue: float
    inference: float
    batch_size: int


@dataclass(eq=False)
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float | None = None
    dispatched: bool = False  # taken from the queue into a batch: its inference runs (and is counted)


def _retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header: at least 1."""
    return max(1, math.ceil(seconds))


def _key(feeds: Feeds) -> tuple:
    """Requests batch together only if every tensor matches in name, dtype and per-row shape."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items()))


class DynamicBatcher:
    """Queues requests for one model version and runs them in batches on `instances` worker threads.

    `run(instance, feeds)` runs one batch on that instance and returns every output with the batch's rows
    first. `max_batch_size` 1 disables batching (requests still queue FIFO, with the same limits).
    """

    def __init__(
        self,
        run: RunBatch,
        instances: int,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        name: str,
        on_batch: Callable[[int, float], None] | None = None,
        inline_below: float = 0.0,
        solo: bool = False,
    ) -> None:
        """`inline_below`: with no wait for company (`max_queue_delay_ms` 0), a request submitted `alone` that finds
        the queue empty and an instance idle runs at once on the event loop, without the hop to the instance's
        thread, when requests of its shapes took less than this many seconds (0: never).

        `solo`: instance 0 runs a batch only when it would otherwise run alone (every other instance idle, nothing
        else queued): an instance spreading one batch over every core, for the latency of a request alone, beside
        instances that serve a queue side by side (two of them and it at once would crowd the cores)."""
        if solo and instances < 2:
            raise ValueError("a solo instance needs other instances for the queue")
        self._run = run
        self.max_batch_size = max_batch_size
        self._delay = max_queue_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self._name = name
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"{name}-instance{i}") for i in range(instances)]
        # made anew by `_start` in the loop that uses them (asyncio primitives bind to their first loop)
        self._idle: asyncio.Queue[int] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Task] = set()
        # moving averages of the measured batches (None: nothing measured yet), for the expected wait
        self._batch_seconds: float | None = None
        self._queue_measured = False  # a queue instance ran a batch (before: the solo instance's stand in)
        self._batch_rows = 1.0
        self._inline_below = inline_below if max_queue_delay_ms == 0 else 0.0
        self._row_seconds: dict[tuple, float] = {}  # moving average of seconds per row, by request shapes
        self._held: int | None = None  # the idle instance the dispatcher holds while the queue is empty
        self._solo = solo
        self._solo_idle = solo
        self._queue_instances = instances - 1 if solo else instances  # those serving a queue side by side

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._queue)

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue.clear()
        self._idle = asyncio.Queue()  # the queue instances (the solo one is `_solo_idle`)
        for instance in range(len(self._executors) - self._queue_instances, len(self._executors)):
            self._idle.put_nowait(instance)
        self._solo_idle = self._solo
        self._arrived = asyncio.Event()
        self._dispatcher = self._loop.create_task(self._dispatch(), name=f"{self._name}-batcher")

    async def submit(self, feeds: Feeds, rows: int, deadline: float | None = None, alone: bool = False) -> BatchResult:
        """Queue `feeds` (`rows` rows on axis 0) and wait for its outputs. `alone`: no other request of the model
        is in flight (only then may a cheap one run on the loop: with others about, the loop has their work to do
        while an instance's thread runs this one).

        Raises `Overloaded` at once when the queue is full and `DeadlineExceeded` if `deadline`
        (a `time.perf_counter()` value) passes first; a cancelled caller's request is dropped from the queue.
        """
        if self._loop is not asyncio.get_running_loop():  # first call, or a new loop (e.g. the CLI's asyncio.run)
            self._start()
        if len(self._queue) >= self.max_queue_size:
            self._drop_dead()  # cancelled and expired requests do not hold places
        if len(self._queue) >= self.max_queue_size:
            raise self.overloaded(len(self._queue))
        key = _key(feeds)
        if alone and self._runs_inline(key, rows):
            return self._run_inline(feeds, rows, key, deadline)
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(feeds, rows, key, future, deadline=deadline)
        self._queue.append(pending)
        self._arrived.set()
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
        finally:
            if not future.done():
                future.cancel()  # caller cancelled (client gone) or deadline passed: never run it
                if not pending.dispatched:
                    self._forget(pending)
        if not done:
            raise self._expired(pending.dispatched)
        return future.result()

    def _runs_inline(self, key: tuple, rows: int) -> bool:
        """Whether a request runs at once on the loop: nothing queued, an instance idle, and its shapes cheap."""
        if self._queue or (self._held is None and self._idle.empty()):
            return False
        cost = self._row_seconds.get(key)
        return cost is not None and cost * rows < self._inline_below

    def _run_inline(self, feeds: Feeds, rows: int, key: tuple, deadline: float | None) -> BatchResult:
        """Run on an idle instance from the loop: nothing else can take the instance meanwhile (the loop is busy
        with this run), and a failure is the caller's to report, as from a batch of one."""
        if deadline is not None and time.perf_counter() >= deadline:
            raise self._expired()
        solo = self._runs_solo()
        if solo:
            self._solo_idle, instance = False, 0
        else:
            instance = self._held if self._held is not None else self._idle.get_nowait()
        try:
            started = time.perf_counter()
            outputs = self._run(instance, feeds)
            seconds = time.perf_counter() - started
        finally:
            if solo:
                self._solo_idle = True
            elif instance != self._held:
                self._idle.put_nowait(instance)
        self._measured(rows, seconds, key, queued=not solo)
        if self._on_batch:
            self._on_batch(rows, seconds)
        return BatchResult(outputs, 0.0, seconds, rows)

    def _runs_solo(self) -> bool:
        """Whether the batch taken now (the queue's last) runs on the solo instance: it is idle, and so is every
        queue instance (the one the dispatcher holds counts as idle)."""
        held = 0 if self._held is None else 1
        return self._solo_idle and not self._queue and self._idle.qsize() + held == self._queue_instances

    def _forget(self, pending: _Pending) -> None:
        """Take a request that will never run out of the queue at once, so the depth counts only live ones."""
        try:
            self._queue.remove(pending)
        except ValueError:
            pass

    def overloaded(self, waiting: int) -> Overloaded:
        """The 429 for a model with `waiting` requests ahead; Retry-After is the time to work through them."""
        return Overloaded(
            f"model '{self._name}' has {waiting} requests in its queue (the limit); retry later",
            retry_after=_retry_after(self.expected_wait(waiting) or 0.0),
        )

    def expected_wait(self, rows: int) -> float | None:
        """Seconds the instances take to work through `rows` rows, at the measured seconds per row of the batches
        they form, all instances at once; None before a batch was measured."""
        if self._batch_seconds is None:
            return None
        return rows * self._batch_seconds / (self._batch_rows * self._queue_instances)

    def too_late(self, ahead: int, budget: float | None, deadline: float | None) -> Overloaded | None:
        """The 429 for a request behind `ahead` rows whose expected wait exceeds `budget` (seconds) or the time left
        before its `deadline` (a `time.perf_counter()` value); None if it may wait, or nothing was measured yet."""
        limits = [] if budget is None else [(budget, "the model's queue-wait budget")]
        if deadline is not None:
            limits.append((deadline - time.perf_counter(), "the time left before the request's deadline"))
        wait = self.expected_wait(ahead) if limits else None
        if wait is None:
            return None
        limit, what = min(limits)
        if wait <= limit:
            return None
        return Overloaded(
            f"model '{self._name}': the expected wait in its queue is {wait * 1000:.0f} ms ({ahead} rows ahead), "
            f"over {what} of {limit * 1000:.0f} ms; retry later",
            retry_after=_retry_after(wait - limit),
        )

    def _expired(self, dispatched: bool = False) -> DeadlineExceeded:
        if dispatched:
            return DeadlineExceeded(f"the request's inference in model '{self._name}' ran past its deadline")
        return DeadlineExceeded(f"the request waited past its deadline in model '{self._name}''s queue")

    async def _dispatch(self) -> None:
        while True:
            instance = await self._idle.get()
            self._held = instance
            try:
                batch = await self._next_batch()
                if self._runs_solo():
                    self._idle.put_nowait(instance)
                    self._solo_idle, instance = False, 0
            finally:
                self._held = None
            task = asyncio.get_running_loop().create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            # waiting for the next idle instance holds no request: its tensors, and the runtime memory its outputs
            # keep (an ONNX Runtime output keeps its session's whole memory arena, even past the session)
            del batch, task

    def _drop_dead(self) -> None:
        """Remove cancelled requests and answer expired ones (504) from the head of the queue onwards."""
        now = time.perf_counter()
        alive: collections.deque[_Pending] = collections.deque()
        for pending in self._queue:
            if pending.future.done():
                continue
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(self._expired())
                continue
            alive.append(pending)
        self._queue = alive

    def _prefix(self) -> tuple[int, bool]:
        """How many queued requests form the next batch, and whether it can still grow. While other instances are
        idle too, the queue's head (up to `max_batch_size` rows for each) is shared evenly, so they do not wait while
        one instance runs every queued request; it can grow until each would get a full batch."""
        idle = self._idle.qsize() + 1  # the instance this batch is for, and the others idle now
        rows, can_grow = self._head_rows(self.max_batch_size * idle)
        share = max(1, min(self.max_batch_size, -(-sum(rows) // idle)))
        count, taken = 1, rows[0]
        while count < len(rows) and taken + rows[count] <= share:
            taken += rows[count]
            count += 1
        return count, can_grow

    def _head_rows(self, limit: int) -> tuple[list[int], bool]:
        """Rows of the queue's first requests that may share batches (same shapes, at most `limit` rows in all;
        the first always), and whether more could join them."""
        head = self._queue[0]
        rows, total = [head.rows], head.rows
        for pending in itertools.islice(self._queue, 1, None):
            if pending.key != head.key or total + pending.rows > limit:
                return rows, False
            rows.append(pending.rows)
            total += pending.rows
        return rows, total < limit

    async def _next_batch(self) -> list[_Pending]:
        while True:
            self._drop_dead()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            count, can_grow = self._prefix()
            wait = self._queue[0].enqueued + self._delay - time.perf_counter()
            if can_grow and wait > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    pass
                continue
            batch = [self._queue.popleft() for _ in range(count)]
            for pending in batch:
                pending.dispatched = True
            return batch

    def _work(self, instance: int, batch: list[_Pending]) -> tuple[list[Feeds | Exception], float, float]:
        """In the instance's thread: stack the batch once, run it, time it; each request's outputs (or error).

        If a batch of several requests fails, each is run again alone, so only the request that causes the
        error gets it and the others are answered. If an output of a batch does not have one row per input row
        (its first dimension is not the batch: e.g. a count of detections), its rows cannot be told apart: each
        request is run again alone and batching stops for this model.
        """
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                shares: list[Feeds | Exception] = [self._run(instance, batch[0].feeds)]
            else:
                stacked = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}
                outputs = self._run(instance, stacked)
                offsets = np.cumsum([0] + [p.rows for p in batch])
                if any(value.ndim == 0 or value.shape[0] != offsets[-1] for value in outputs.values()):
                    self._stop_batching(outputs, int(offsets[-1]))
                    return [self._run_alone(instance, p) for p in batch], started, time.perf_counter()
                shares = [
                    {name: value[offsets[i] : offsets[i + 1]] for name, value in outputs.items()}
                    for i in range(len(batch))
                ]
        except Exception as exc:
            shares = [exc] if len(batch) == 1 else [self._run_alone(instance, p) for p in batch]
        return shares, started, time.perf_counter()

    def _stop_batching(self, outputs: Feeds, rows: int) -> None:
        if self.max_batch_size > 1:
            shapes = {name: list(value.shape) for name, value in outputs.items()}
            log.warning(
                "model '%s': a batch of %d rows gave outputs %s, not one row per input row; batching is "
                "off for it from now on (set max_batch_size: 1 in its model.yaml)",
                self._name,
                rows,
                shapes,
            )
            self.max_batch_size = 1

    def _run_alone(self, instance: int, pending: _Pending) -> Feeds | Exception:
        if pending.future.done():  # cancelled meanwhile: do not spend the instance on it
            return RuntimeError("cancelled before it ran")
        try:
            return self._run(instance, pending.feeds)
        except Exception as exc:
            return exc

    async def _execute(self, instance: int, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        solo = self._solo and instance == 0
        try:
            shares, started, ended = await loop.run_in_executor(self._executors[instance], self._work, instance, batch)
        except Exception as exc:  # outside the model run (e.g. out of memory stacking): answer, never leave waiting
            shares, started, ended = [exc] * len(batch), time.perf_counter(), time.perf_counter()
        finally:
            if solo:
                self._solo_idle = True
            else:
                self._idle.put_nowait(instance)
        rows = sum(p.rows for p in batch)
        self._measured(rows, ended - started, batch[0].key if len(batch) == 1 else None, queued=not solo)
        if self._on_batch:
            self._on_batch(rows, ended - started)
        for pending, share in zip(batch, shares):
            if pending.future.done():
                continue
            if isinstance(share, BaseException):
                pending.future.set_exception(share)
            else:
                pending.future.set_result(BatchResult(share, started - pending.enqueued, ended - started, rows))

    def _measured(self, rows: int, seconds: float, key: tuple | None, queued: bool = True) -> None:
        """Fold one batch into the moving averages of batch seconds and rows (the expected wait is at the queue
        instances' pace: the solo instance's batches, `queued` False, stand in only until a queue instance's first
        batch, which replaces them), and, for a batch of one request of shapes `key`, of seconds per row for those
        shapes (what a request alone costs; the first sets each)."""
        if key is not None:
            if len(self._row_seconds) >= _COSTS_KEPT and key not in self._row_seconds:
                self._row_seconds.clear()
            cost, per_row = self._row_seconds.get(key), seconds / rows
            self._row_seconds[key] = per_row if cost is None else cost + EWMA_WEIGHT * (per_row - cost)
        if not queued and self._queue_measured:
            return
        if self._batch_seconds is None or (queued and not self._queue_measured):
            self._batch_seconds, self._batch_rows = seconds, float(rows)
            self._queue_measured = queued
        else:
            self._batch_seconds += EWMA_WEIGHT * (seconds - self._batch_seconds)
            self._batch_rows += EWMA_WEIGHT * (rows - self._batch_rows)

    def abandon(self, error: Exception) -> int:
        """Answer every request still waiting in the queue with `error` (running batches go on); how many."""
        waiting = [pending for pending in self._queue if not pending.future.done()]
        for pending in waiting:
            pending.future.set_exception(error)
        self._queue.clear()
        return len(waiting)

    async def close(self) -> None:
        """Answer what is queued and running (up to `DRAIN_SECONDS`), then stop the workers."""
        if self._dispatcher is not None and self._loop is asyncio.get_running_loop():
            deadline = time.perf_counter() + DRAIN_SECONDS
            while (self._queue or self._running) and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            self._dispatcher.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
        self.abandon(Unavailable(f"model '{self._name}' was unloaded before this request's turn; retry"))
        for executor in self._executors:
            executor.shutdown(wait=True)
