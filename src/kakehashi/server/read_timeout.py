"""ASGI middleware cutting request bodies that stall or trickle: the whole body must arrive within a timeout."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kakehashi.errors import KakehashiError


class BodyStalled(KakehashiError):
    """The request body did not arrive in full within the body timeout (HTTP 408)."""

    status = 408


class BodyReadTimeout:
    """Raises `BodyStalled` (answered 408) when a request body is not complete `seconds` after the request began:
    a stalled body and one trickled in a byte at a time both free their connection. Once the body is complete,
    `receive` is left alone (it then waits for the client to disconnect)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        body_complete = False
        deadline = asyncio.get_running_loop().time() + self.seconds

        async def timed() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyStalled(f"the request body stalled: it did not arrive within {self.seconds:g} s") from None
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)
