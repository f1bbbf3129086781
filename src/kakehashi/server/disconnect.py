"""Dropping the work of HTTP clients that left before their answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from kakehashi.dataplane.tracking import CANCELLED
from kakehashi.errors import KakehashiError

T = TypeVar("T")


class ClientDisconnected(KakehashiError):
    """The client closed the connection before its answer was ready (logged as 499, nothing is sent)."""

    status = CANCELLED


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
