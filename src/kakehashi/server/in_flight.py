"""Counting what is being answered, so a drain can wait until every HTTP request, WebSocket and gRPC call ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Receive, Scope, Send


class Calls:
    """How many calls are being answered; `idle` is set while none is."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @contextmanager
    def one(self) -> Iterator[None]:
        """Count one call while the block runs."""
        self.count += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self.idle.set()


class InFlight:
    """ASGI middleware: `calls` counts the HTTP requests and WebSockets being handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = Calls()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with self.calls.one():
            await self.app(scope, receive, send)
