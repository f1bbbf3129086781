"""Per-request bookkeeping for HTTP routes: metrics by outcome, and dropping work of clients that left."""

from __future__ import annotations

import asyncio
import time
from functools import wraps
from typing import Awaitable, Callable, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
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


def tracked(protocol: str) -> Callable[[Endpoint], Endpoint]:
    """Count the route's requests by model, version and outcome, time them, and track those in flight."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        in_flight = metrics.IN_FLIGHT.labels(protocol=protocol)

        @wraps(endpoint)
        async def route(request: Request) -> Response:
            started = time.perf_counter()
            request.state.labels = {"model": "", "version": ""}
            status = 500
            in_flight.inc()
            try:
                response = await endpoint(request)
                status = response.status_code
                return response
            except KakehashiError as exc:
                status = exc.status
                raise
            except HTTPException as exc:  # e.g. Starlette's 400 for a malformed multipart body
                status = exc.status_code
                raise
            finally:
                in_flight.dec()
                labels = request.state.labels
                result = outcome(status)
                metrics.REQUESTS.labels(**labels, protocol=protocol, outcome=result).inc()
                metrics.REQUEST_SECONDS.labels(**labels, protocol=protocol, outcome=result).observe(
                    time.perf_counter() - started)
        return route
    return decorate


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` (start it only after the body was read); cancel it if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left (or this request itself was cancelled): drop its queued work
    if not task.done():
        raise ClientDisconnected("the client disconnected; its queued work was dropped")
    return task.result()
