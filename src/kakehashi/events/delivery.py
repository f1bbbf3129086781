"""Delivery from the outbox to the sinks: one task per sink, strictly in order, at least once, retrying forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from kakehashi.events.event import Event
from kakehashi.events.outbox import Outbox
from kakehashi.events.sinks import Sink

log = logging.getLogger(__name__)

QUEUED = Gauge("kakehashi_sink_queued", "Events recorded but not yet delivered to the sink.", ("sink",))
DELIVERED = Counter("kakehashi_sink_delivered", "Events the sink acknowledged.", ("sink",))
RETRIES = Counter("kakehashi_sink_retries", "Delivery attempts that repeat a failed one.", ("sink",))
FAILURES = Counter("kakehashi_sink_failures", "Delivery attempts that failed.", ("sink",))

BATCH = 100
POLL_SECONDS = 1.0
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 30.0


def backoff_seconds(failures: int) -> float:
    """The wait after the `failures`-th consecutive failure: 0.2 s doubling up to 30 s, each within ±20 % jitter."""
    base = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** min(failures - 1, 16))
    return min(BACKOFF_MAX_SECONDS, base * random.uniform(0.8, 1.2))


@dataclass
class _Lane:
    """One sink's delivery state."""

    sink: Sink
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    queued: int = 0
    delivered: int = 0
    retries: int = 0
    failures: int = 0
    last_error: str | None = None


class Delivery:
    """Delivers each sink's pending outbox events in `seq` order. An event is acknowledged only after `send`
    succeeded; a failed `send` is retried with the same event (exponential backoff with jitter) until it succeeds,
    so nothing is skipped. Call `wake()` after `Outbox.record` to start at once; the outbox is also polled every
    second. `stop()` cancels the tasks and closes the sinks; anything unacknowledged goes out after the next start
    (possibly again: receivers de-duplicate on the event id)."""

    def __init__(self, outbox: Outbox, sinks: Sequence[Sink]) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique: {names}")
        self.outbox = outbox
        self._lanes = {sink.name: _Lane(sink) for sink in sinks}

    def start(self) -> None:
        for lane in self._lanes.values():
            if lane.task is None:
                lane.wake = asyncio.Event()
                lane.task = asyncio.create_task(self._deliver(lane), name=f"deliver-{lane.sink.name}")

    def wake(self) -> None:
        for lane in self._lanes.values():
            lane.wake.set()

    async def stop(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            lane.task = None
            try:
                await lane.sink.close()
            except Exception:
                log.exception("closing event sink %r failed", lane.sink.name)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per sink: queued (not yet delivered), delivered, retries, failures (failed attempts), last_error."""
        return {
            name: {
                "queued": lane.queued,
                "delivered": lane.delivered,
                "retries": lane.retries,
                "failures": lane.failures,
                "last_error": lane.last_error,
            }
            for name, lane in self._lanes.items()
        }

    async def _deliver(self, lane: _Lane) -> None:
        name = lane.sink.name
        while True:
            lane.wake.clear()
            batch = await self.outbox.pending(name, BATCH)
            await self._count_queued(lane)
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), POLL_SECONDS)
                continue
            for seq, event in batch:
                await self._send(lane, event)
                await self.outbox.acknowledge(name, seq)
                lane.delivered += 1
                DELIVERED.labels(name).inc()
                lane.queued = max(0, lane.queued - 1)
                QUEUED.labels(name).set(lane.queued)

    async def _send(self, lane: _Lane, event: Event) -> None:
        name = lane.sink.name
        failures = 0
        while True:
            try:
                await lane.sink.send(event)
                lane.last_error = None
                return
            except Exception as exc:
                failures += 1
                lane.failures += 1
                FAILURES.labels(name).inc()
                lane.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff_seconds(failures)
                log.warning("event %s to sink %r failed (%s); retrying in %.1f s", event.id, name, exc, delay)
            await self._count_queued(lane)
            await asyncio.sleep(delay)
            lane.retries += 1
            RETRIES.labels(name).inc()

    async def _count_queued(self, lane: _Lane) -> None:
        lane.queued = await self.outbox.queued(lane.sink.name)
        QUEUED.labels(lane.sink.name).set(lane.queued)
