"""Per-request bookkeeping: metrics by outcome for every transport, and dropping work of clients that left."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from kakehashi import metrics
from kakehashi.errors import KakehashiError

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]

_OUTCOMES = {429: "rejected", 503: "unavailable", 504: "timeout", 499: "cancelled"}


class ClientDisconnected(KakehashiError):
    """The client closed the connection before its answer was ready (logged as 499, nothing is sent)."""

    status = 499


def outcome(status: int) -> str:
    if status < 400:
        return "success"
    return _OUTCOMES.get(status, "invalid" if status < 500 else "error")


@functools.cache
def _in_flight(protocol: str):
    return metrics.IN_FLIGHT.labels(protocol=protocol)


class RequestTracker:
    """One request's metrics, for any transport: in flight while open, then counted and timed by model,
    version and outcome. The transport sets `series` once it knows the model version (its `VersionSeries`'
    requests) and `status` from its answer."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.series: metrics.RequestSeries = metrics.UNATTRIBUTED
        self.status = 500
        self._in_flight = _in_flight(protocol)

    def __enter__(self) -> RequestTracker:
        self._started = time.perf_counter()
        self._in_flight.inc()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, KakehashiError):
            self.status = error.status
        elif isinstance(error, HTTPException):  # e.g. Starlette's 400 for a malformed multipart body
            self.status = error.status_code
        elif isinstance(error, asyncio.CancelledError | ClientDisconnect):
            self.status = ClientDisconnected.status
        self._in_flight.dec()
        self.series.record(self.protocol, outcome(self.status), time.perf_counter() - self._started)


def tracked(protocol: str) -> Callable[[Endpoint], Endpoint]:
    """Track an HTTP route's requests with a `RequestTracker` (found as `request.state.tracker`)."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def route(request: Request) -> Response:
            with RequestTracker(protocol) as tracker:
                request.state.tracker = tracker
                response = await endpoint(request)
                tracker.status = response.status_code
                return response

        return route

    return decorate


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` (start it only after the body was read); cancel it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    dropped = False
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            dropped = task.cancel()  # the client left (or this request itself was cancelled): drop its queued work
            await asyncio.wait({task})  # and let it unwind, so the request ends only when its work has
    if dropped:
        raise ClientDisconnected("the client disconnected; its queued work was dropped")
    return task.result()
