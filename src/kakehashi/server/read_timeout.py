"""ASGI middleware cutting request bodies that stall: each part of the body must arrive within a timeout."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kakehashi.errors import KakehashiError


class BodyStalled(KakehashiError):
    """No part of the request body arrived within the body timeout (HTTP 408)."""

    status = 408


class BodyReadTimeout:
    """Raises `BodyStalled` (answered 408) when the next part of a request body takes over `seconds` to arrive.
    Once the body is complete, `receive` is left alone (it then waits for the client to disconnect)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        body_complete = False

        async def timed() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                raise BodyStalled(f"the request body stalled: no data for {self.seconds:g} s") from None
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)
