"""One live stream: the newest frames of its source through a served model (sharing the model's batcher with every
other stream and request, so N cameras batch together), then tracking, zones and rules; events to the outbox, and
each frame's results to live subscribers (Server-Sent Events, WebSocket, the web page)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from kakehashi.dataplane import DataPlane
from kakehashi.errors import KakehashiError
from kakehashi.events.event import Event
from kakehashi.streams.analytics import Analytics, FrameAnalysis
from kakehashi.streams.config import StreamConfig
from kakehashi.streams.metrics import StreamSeries
from kakehashi.streams.source import Frame, FrameSource, SourceClosed
from kakehashi.tasks.annotate import annotated_jpeg

log = logging.getLogger(__name__)
SUBSCRIBER_BACKLOG = 8  # results a slow subscriber may fall behind before its oldest are dropped


@dataclass(frozen=True)
class Processed:
    """A frame with its model answer and analysis, the newest of a stream (for the live view's picture)."""

    frame: Frame
    analysis: FrameAnalysis

    def annotated_jpeg(self) -> bytes:
        """The frame as a JPEG with its detections drawn (converting the whole frame: in a pool)."""
        return annotated_jpeg(self.frame.rgb(), self.analysis.detections)


class Subscription:
    """One live subscriber's results, newest kept: a subscriber that falls `SUBSCRIBER_BACKLOG` behind loses its
    oldest (counted in `dropped`); the stream never waits for it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[dict | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self.dropped = 0

    def put(self, result: dict | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(result)

    async def __aiter__(self) -> AsyncIterator[dict]:
        while (result := await self._queue.get()) is not None:
            yield result


class Stream:
    """A running stream (`start`, `stop`); `status()` describes it, `subscribe()` follows its results."""

    def __init__(
        self,
        config: StreamConfig,
        plane: DataPlane,
        record: Callable[[list[Event]], Any],
        compute: Executor,
    ) -> None:
        """`record(events)`: an awaitable that returns when the events are durable (the outbox)."""
        assert config.model is not None, "the manager names the model"
        self.config = config
        self.name = config.name
        self._model = config.model
        self._plane = plane
        self._record = record
        self._compute = compute
        self._values = config.request_values()
        self.source = FrameSource(
            config.url,
            fps=config.fps,
            loop=config.loop,
            realtime=config.realtime,
            reconnect_max_seconds=config.reconnect_max_seconds,
            max_failures=config.max_failures,
        )
        self._analytics = Analytics(config.name, config)
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task | None = None
        self.latest: Processed | None = None
        self.inferred = 0
        self.failed = 0
        self.events = 0
        self.last_error = ""
        self.lag_seconds = 0.0  # frame offered → results pushed, of the newest frame
        self.recent_events: collections.deque[dict] = collections.deque(maxlen=20)
        self._inferred_times: collections.deque[float] = collections.deque(maxlen=50)
        self.series = StreamSeries(config.name)
        self.started = time.time()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.source.start(loop)
        self._task = loop.create_task(self._run(), name=f"stream-{self.name}")

    async def stop(self) -> None:
        """Stop reading; frames in flight are finished (their events recorded), subscribers are ended."""
        await asyncio.to_thread(self.source.stop)  # joins the reading thread briefly
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.end_followers()
        self.series.remove()

    def end_followers(self) -> None:
        for subscription in self._subscribers:
            subscription.put(None)
        self._subscribers.clear()

    # -- the frame loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        """Frames in order, up to `max_in_flight` at once through the model; each analysed in frame order."""
        in_flight: collections.deque[tuple[Frame, asyncio.Task]] = collections.deque()
        after = -1
        try:
            while True:
                while in_flight and (in_flight[0][1].done() or len(in_flight) >= self.config.max_in_flight):
                    frame, task = in_flight.popleft()
                    await self._finish(frame, task)
                try:
                    taken = await self._next_frame(after, in_flight)
                except SourceClosed as closed:
                    log.info("stream %s: source closed: %s", self.name, closed)
                    break
                if taken is None:
                    continue
                after = taken.number
                in_flight.append((taken, asyncio.ensure_future(self._predict(taken))))
        finally:
            while in_flight:
                frame, task = in_flight.popleft()
                await self._finish(frame, task)

    async def _next_frame(self, after: int, in_flight: collections.deque) -> Frame | None:
        """The source's next frame, or None when a frame in flight finished first (so it is analysed at once)."""
        waiting = asyncio.ensure_future(self.source.next(after))
        if not in_flight:
            return await waiting
        await asyncio.wait({waiting, in_flight[0][1]}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return None

    async def _predict(self, frame: Frame) -> list[dict]:
        with self._plane.request("stream", self._model, self.config.version) as call:
            [prediction] = await call.predict([frame], self._values)
        return prediction.results

    async def _finish(self, frame: Frame, task: asyncio.Task) -> None:
        """Analyse one answered frame: events recorded (durably) before its results are pushed."""
        try:
            results = await task
        except KakehashiError as exc:
            self._failed(exc.message)
            return
        except Exception as exc:  # a fault of ours: logged with its traceback, the stream goes on
            log.error("stream %s: frame %d failed", self.name, frame.number, exc_info=exc)
            self._failed(f"internal error: {exc}")
            return
        loop = asyncio.get_running_loop()
        # tracking (its assignment grows with the detections) and rules in the pool; frames stay in order
        analysis = await loop.run_in_executor(self._compute, self._analytics.update, frame.number, frame.time, results)
        events = analysis.events
        if events and self.config.snapshot:
            picture = await loop.run_in_executor(self._compute, Processed(frame, analysis).annotated_jpeg)
            events = [_with_snapshot(event, picture) for event in events]
        if events:
            try:
                await self._record(events)
            except Exception as exc:
                log.error("stream %s: events of frame %d not recorded", self.name, frame.number, exc_info=exc)
                self._failed(f"events not recorded: {exc}")
                return
            self.events += len(events)
            self.series.events.inc(len(events))
            self.recent_events.extend(_summary(event) for event in events)
        self.latest = Processed(frame, analysis)
        self.inferred += 1
        now = time.time()
        self._inferred_times.append(now)
        self.lag_seconds = now - (frame.offered or frame.time)  # from when it was offered (a file's frames wait)
        self.series.inferred(self.lag_seconds)
        self._publish(self._result(frame, analysis, events))

    def _failed(self, message: str) -> None:
        self.failed += 1
        self.series.failed.inc()
        if message != self.last_error:
            log.warning("stream %s: a frame failed: %s", self.name, message)
        self.last_error = message

    # -- results out --------------------------------------------------------------------------------

    def _result(self, frame: Frame, analysis: FrameAnalysis, events: list[Event]) -> dict:
        return {
            "stream": self.name,
            "frame": frame.number,
            "frame_time": frame.time,
            "lag_ms": round(self.lag_seconds * 1000, 1),
            "shape": [frame.size[1], frame.size[0]],
            "detections": analysis.detections,
            "zones": analysis.zones,
            "lines": analysis.lines,
            "events": [_summary(event) for event in events],
        }

    def _publish(self, result: dict) -> None:
        for subscription in self._subscribers:
            subscription.put(result)

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def fps(self) -> float:
        """Frames inferred per second, over the last ones."""
        times = self._inferred_times
        if len(times) < 2 or time.time() - times[-1] > 5:
            return 0.0
        return round((len(times) - 1) / (times[-1] - times[0]), 2) if times[-1] > times[0] else 0.0

    def status(self) -> dict:
        source = self.source.status()
        return {
            "id": self.name,
            "url": self.config.redacted_url(),
            "model": self.config.model,
            "state": source["state"],
            "reason": source.get("reason", ""),
            "source": source,
            "inferred": self.inferred,
            "failed": self.failed,
            "last_error": self.last_error,
            "fps": self.fps(),
            "lag_ms": round(self.lag_seconds * 1000, 1),
            "events": self.events,
            "recent_events": list(self.recent_events),
            "zones": self.latest.analysis.zones if self.latest else {},
            "lines": self.latest.analysis.lines if self.latest else {},
            "subscribers": self.subscribers,
            "config": self.config.public(),
        }


def _with_snapshot(event: Event, picture: bytes) -> Event:
    return replace(event, snapshot=picture)


def _summary(event: Event) -> dict:
    """An event as the live views show it (no snapshot)."""
    body = event.to_json()
    body.pop("snapshot_jpeg", None)
    return body
