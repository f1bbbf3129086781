"""ASGI middleware refusing request bodies over a size limit with 413, before or while they stream in."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kakehashi.errors import PayloadTooLarge
from kakehashi.server.responses import error_response


class BodyLimit:
    """Answers 413 for a declared `Content-Length` over `limit`; stops a streamed body that exceeds it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is larger than the limit of {self.limit} bytes"
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await error_response(413, message)(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                raise PayloadTooLarge(message)
            return event

        await self.app(scope, counted, send)
