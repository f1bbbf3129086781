"""ASGI middleware closing the connection after an answer sent before its request body was read to the end."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if (key == b"content-length" and value.strip() not in (b"", b"0")) or key == b"transfer-encoding":
            return True
    return False


class CloseAfterUnreadBody:
    """Adds `Connection: close` to an answer that leaves part of its request body unread (an early 401, 404, 413,
    431...): the rest of the body is still on its way, so the connection cannot carry the client's next request,
    and the client is told to open a new one instead of having its next request fail on this one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        complete = False

        async def watched() -> Message:
            nonlocal complete
            message = await receive()
            complete = complete or message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, watched, closing)
