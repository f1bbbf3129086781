"""Where events go: a webhook, an MQTT broker, a JSON-lines file. `send` returns once the sink has the event and
raises otherwise; delivery retries, and the event's `id` lets the receiver drop the duplicates a retry can make."""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Protocol

import orjson

from kakehashi.events.event import Event


class SinkError(Exception):
    """The sink refused the event or could not be reached."""


class Sink(Protocol):
    """A destination for events. After `close` the sink may be used again: it reconnects on the next `send`."""

    name: str

    async def send(self, event: Event) -> None:
        """Deliver one event; return only once the destination has it, raise otherwise."""
        ...

    async def close(self) -> None: ...


def payload(event: Event) -> bytes:
    return orjson.dumps(event.to_json(), option=orjson.OPT_SERIALIZE_NUMPY)


class JsonlSink:
    """Appends one JSON line per event to `path`, flushed and fsync'd on the sink's own thread."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._file: IO[bytes] | None = None

    async def send(self, event: Event) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"jsonl-{self.name}")
        line = payload(event) + b"\n"
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._append, line)
        except OSError as exc:
            raise SinkError(f"JSONL file {self.path}: {exc}") from exc

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        start = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()
            with contextlib.suppress(OSError):
                os.truncate(self.path, start)  # no half line before the retry's line
            raise

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_file)
            executor.shutdown()
