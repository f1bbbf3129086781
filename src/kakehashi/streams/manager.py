"""The server's streams: started from the config file, the command line and `POST /v1/streams`; their events go to
one outbox and on to the sinks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING

from kakehashi.dataplane import DataPlane
from kakehashi.errors import InvalidInput, KakehashiError, NotFound
from kakehashi.events.config import EventsConfig, build_sinks
from kakehashi.events.delivery import Delivery
from kakehashi.events.event import Event
from kakehashi.events.outbox import Outbox
from kakehashi.repository.decisions import cache_folder
from kakehashi.streams.config import StreamConfig
from kakehashi.streams.metrics import SOURCES

if TYPE_CHECKING:
    from kakehashi.streams.stream import Stream

log = logging.getLogger(__name__)
MAX_STREAMS = 64


class StreamConflict(KakehashiError):
    """A stream of that name already runs (HTTP 409)."""

    status = 409


def default_outbox(port: int) -> Path:
    """Where events are kept when the config names no outbox: beside the load decisions (else in the working
    folder), one file per server port, so two servers on one machine never share their sinks' cursors."""
    folder = cache_folder()
    return (folder if folder is not None else Path.cwd()) / f"events-{port}.db"


class StreamManager:
    """Streams by name, the outbox and the delivery to sinks."""

    def __init__(
        self, plane: DataPlane, compute: Executor, events: EventsConfig, port: int, allow_local_sources: bool = False
    ) -> None:
        """`port`: the server's (names the default outbox); `allow_local_sources`: whether `POST /v1/streams` may
        name files and devices (the config file and the command line always may)."""
        self._plane = plane
        self._compute = compute
        self._allow_local = allow_local_sources
        self.outbox_path = events.outbox or default_outbox(port)
        self._sinks = build_sinks(events)
        self.outbox = Outbox(self.outbox_path, [sink.name for sink in self._sinks], events.max_events)
        self.delivery = Delivery(self.outbox, self._sinks)
        self.streams: dict[str, Stream] = {}
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self, configs: Sequence[StreamConfig] = ()) -> None:
        """Start `configs`. The outbox opens now if it holds events from an earlier run (delivered first, and
        replayed) or streams start; else with the first stream, so a server that never runs one keeps no file."""
        if configs or self.outbox_path.exists():
            await self._open_outbox()
        for config in configs:
            try:
                await self.add(config, trusted=True)
            except KakehashiError as exc:  # e.g. its model failed to load: the other streams start
                log.error("stream %s: not started: %s", config.name, exc.message)

    async def _open_outbox(self) -> None:
        """Open the outbox and start delivering from it, once."""
        async with self._opening:
            if self._opened:
                return
            self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
            await self.outbox.open()
            self._opened = True
            self.delivery.start()

    async def record(self, events: list[Event]) -> None:
        """Keep `events` durably, then wake the delivery."""
        await self.outbox.record(events)
        self.delivery.wake()

    async def add(self, config: StreamConfig, trusted: bool = False) -> Stream:
        """Start a stream; `trusted`: from the operator (config file, command line), not the API."""
        if config.name in self.streams:
            raise StreamConflict(f"a stream named '{config.name}' already runs; delete it first or pick another name")
        if len(self.streams) >= MAX_STREAMS:
            raise InvalidInput(f"this server runs at most {MAX_STREAMS} streams")
        if not trusted and not self._allow_local and not config.is_network():
            raise InvalidInput(
                f"stream '{config.name}': the API starts network sources only (rtsp, http(s), rtmp, srt); files and "
                "devices come from the server's --config or --stream, or start it with --allow-local-streams"
            )
        if config.model is None:
            config = config.model_copy(update={"model": self._only_model()})
        servable = self._plane.check(str(config.model), config.request_values())
        if servable.kind == "tensor":
            raise InvalidInput(f"model '{servable.name}' does not take images; a stream needs an image model")
        from kakehashi.streams.stream import Stream  # PyAV and SciPy load with the first stream

        await self._open_outbox()  # where its events are kept
        stream = Stream(config, self._plane, self.record, self._compute)
        self.streams[config.name] = stream
        SOURCES.sources[config.name] = stream.source
        stream.start()
        log.info("stream %s: started on %s with model %s", config.name, config.redacted_url(), config.model)
        return stream

    def _only_model(self) -> str:
        names = [entry["name"] for entry in self._plane.index(ready_only=True)]
        if not names:
            raise InvalidInput("no model is ready to run a stream; name one with 'model'")
        if len(names) > 1:
            raise InvalidInput(f"this server serves several models ({', '.join(sorted(names))}); name one with 'model'")
        return names[0]

    def get(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise NotFound(f"no stream named '{name}'")
        return stream

    async def remove(self, name: str) -> None:
        """Stop the stream, then forget it: its name stays taken while it stops (frames in flight finish), so a new
        stream of that name cannot start meanwhile and lose its metric series to the old one's cleanup."""
        stream = self.get(name)
        await stream.stop()
        if self.streams.get(name) is stream:  # not already forgotten by a concurrent remove
            del self.streams[name]
            SOURCES.sources.pop(name, None)
            log.info("stream %s: stopped", name)

    async def events(self, limit: int, stream: str | None, after: int | None) -> list[dict]:
        """Recorded events in order (each with its outbox sequence number), for replay."""
        if not self._opened:
            return []  # no stream ran, here or in an earlier run on this outbox
        return [{"seq": seq, **event.to_json()} for seq, event in await self.outbox.recent(limit, stream, after)]

    def end_followers(self) -> None:
        """End every live follower (SSE, WebSocket) of every stream; the streams go on."""
        for stream in self.streams.values():
            stream.end_followers()

    def sinks(self) -> dict:
        return self.delivery.status()

    async def close(self) -> None:
        """Stop every stream (frames in flight are finished and their events recorded), then the delivery (what it
        did not deliver stays in the outbox for the next start)."""
        for name in list(self.streams):
            await self.remove(name)
        if self._opened:
            await self.delivery.stop()
            await self.outbox.close()
