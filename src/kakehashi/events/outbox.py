"""The durable event outbox: one SQLite file holding the events in order and each sink's delivery cursor.

Every SQLite call runs on the outbox's own single thread; the async methods hand work to it and await the result,
so the event loop never blocks on disk I/O or fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson
from prometheus_client import Counter

from kakehashi.events.event import Event

log = logging.getLogger(__name__)

DROPPED = Counter("kakehashi_outbox_dropped", "Undelivered events removed because the outbox was full.")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    body BLOB NOT NULL,
    snapshot BLOB
);
CREATE INDEX IF NOT EXISTS events_stream ON events (stream, seq);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class Outbox:
    """Events in `seq` order (strictly increasing, never reused) with one delivery cursor per configured sink.

    `record` returns once the events are committed (WAL, `synchronous=FULL`: they survive kill -9 and power loss).
    A sink's cursor is the last `seq` it acknowledged; `pending` gives what follows it.

    Bound: after each `record`, while more than `max_events` are stored the oldest are removed. Events every
    configured sink has acknowledged go first (they were only kept for replay); if that is not enough, the oldest
    undelivered events are dropped too, counted in `kakehashi_outbox_dropped_total` and logged as a warning naming
    how many and which sinks lose them. A sink new to the file starts at the current end (it gets only events
    recorded from then on); the cursor of a sink no longer configured is ignored (it protects nothing) but kept, so
    the sink resumes where it was if it comes back.
    """

    def __init__(self, path: Path, sinks: Sequence[str], max_events: int = 100_000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = Path(path)
        self.sinks = tuple(dict.fromkeys(sinks))
        self.max_events = max_events
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._cursors: dict[str, int] = {}
        self._count = 0

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("the outbox is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown()
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown()
            self._executor = None

    async def record(self, events: Sequence[Event]) -> list[int]:
        """Store `events` in order; returns their `seq`s once committed to disk."""
        return await self._run(self._record, list(events))

    async def pending(self, sink: str, limit: int = 100) -> list[tuple[int, Event]]:
        """Up to `limit` events after `sink`'s cursor, oldest first."""
        return await self._run(self._pending, sink, limit)

    async def acknowledge(self, sink: str, seq: int) -> None:
        """Move `sink`'s cursor to `seq` (never backwards): that event and all before it are delivered."""
        await self._run(self._acknowledge, sink, seq)

    async def queued(self, sink: str) -> int:
        """How many stored events `sink` has not acknowledged."""
        return await self._run(self._queued, sink)

    async def recent(
        self, limit: int = 100, stream: str | None = None, after_seq: int | None = None
    ) -> list[tuple[int, Event]]:
        """Stored events (delivered or not) for replay, oldest first, optionally of one stream: with `after_seq`,
        the first `limit` after it; without, the latest `limit`."""
        return await self._run(self._recent, limit, stream, after_seq)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # Everything below runs on the outbox thread.

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            with _transaction(db):
                end = self._last_seq(db)
                for sink in self.sinks:
                    db.execute("INSERT OR IGNORE INTO cursors (sink, seq) VALUES (?, ?)", (sink, end))
                stored = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
            self._cursors = {sink: stored[sink] for sink in self.sinks}
            self._count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except BaseException:
            db.close()
            raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def _last_seq(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else int(row[0])

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the outbox is not open")
        return self._db

    def _record(self, events: list[Event]) -> list[int]:
        db = self._connection()
        seqs: list[int] = []
        try:
            with _transaction(db):
                for event in events:
                    body = event.to_json()
                    body.pop("snapshot_jpeg", None)
                    row = (event.stream, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), event.snapshot)
                    cursor = db.execute("INSERT INTO events (stream, body, snapshot) VALUES (?, ?, ?)", row)
                    seqs.append(int(cursor.lastrowid or 0))
                self._count += len(events)
                self._trim(db)
        except BaseException:
            self._count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]  # the transaction rolled back
            raise
        return seqs

    def _trim(self, db: sqlite3.Connection) -> None:
        excess = self._count - self.max_events
        if excess <= 0:
            return
        cut = self._nth_oldest(db, excess)
        self._delete_through(db, min([cut, *self._cursors.values()]))
        excess = self._count - self.max_events
        if excess <= 0:
            return
        cut = self._nth_oldest(db, excess)
        losses = {
            sink: db.execute("SELECT COUNT(*) FROM events WHERE seq > ? AND seq <= ?", (cursor, cut)).fetchone()[0]
            for sink, cursor in self._cursors.items()
        }
        self._delete_through(db, cut)
        DROPPED.inc(excess)
        log.warning(
            "event outbox %s is full (max_events=%d): dropped the %d oldest undelivered events (%s)",
            self.path,
            self.max_events,
            excess,
            ", ".join(f"{lost} for sink {sink!r}" for sink, lost in losses.items() if lost),
        )

    @staticmethod
    def _nth_oldest(db: sqlite3.Connection, n: int) -> int:
        return int(db.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (n - 1,)).fetchone()[0])

    def _delete_through(self, db: sqlite3.Connection, seq: int) -> None:
        self._count -= db.execute("DELETE FROM events WHERE seq <= ?", (seq,)).rowcount

    def _cursor(self, sink: str) -> int:
        try:
            return self._cursors[sink]
        except KeyError:
            raise KeyError(f"sink {sink!r} is not configured in this outbox") from None

    def _pending(self, sink: str, limit: int) -> list[tuple[int, Event]]:
        rows = self._connection().execute(
            "SELECT seq, body, snapshot FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (self._cursor(sink), limit)
        )
        return [_row_event(row) for row in rows]

    def _acknowledge(self, sink: str, seq: int) -> None:
        if seq <= self._cursor(sink):
            return
        db = self._connection()
        with _transaction(db):
            db.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (seq, sink))
        self._cursors[sink] = seq

    def _queued(self, sink: str) -> int:
        row = self._connection().execute("SELECT COUNT(*) FROM events WHERE seq > ?", (self._cursor(sink),))
        return int(row.fetchone()[0])

    def _recent(self, limit: int, stream: str | None, after_seq: int | None) -> list[tuple[int, Event]]:
        where: list[str] = []
        args: list[Any] = []
        if stream is not None:
            where.append("stream = ?")
            args.append(stream)
        if after_seq is not None:
            where.append("seq > ?")
            args.append(after_seq)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if after_seq is not None else "DESC"
        query = f"SELECT seq, body, snapshot FROM events {condition} ORDER BY seq {order} LIMIT ?"
        rows = [_row_event(row) for row in self._connection().execute(query, (*args, limit))]
        return rows if after_seq is not None else rows[::-1]


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error, on an autocommit connection."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _row_event(row: tuple[int, bytes, bytes | None]) -> tuple[int, Event]:
    seq, body, snapshot = row
    return seq, dataclasses.replace(Event.from_json(orjson.loads(body)), snapshot=snapshot)
