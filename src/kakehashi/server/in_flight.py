"""ASGI middleware counting the HTTP requests and WebSockets in flight, so a drain can wait until every one ends."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send


class InFlight:
    """Wraps the app; `idle` is set while no HTTP request or WebSocket is being handled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.count += 1
        self.idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if not self.count:
                self.idle.set()
