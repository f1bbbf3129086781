"""ASGI middleware answering 431 for a request line + headers over the limit.

Granian's HTTP parser already refuses (431) a head that outgrows its read buffer, which is sized to the limit, so
memory stays bounded; it checks the buffer between reads, though, so a head of up to about twice the limit can
get through. This makes the limit exact, counted as it was sent: `METHOD PATH?QUERY HTTP/1.1`, then `name: value`
per header, each line with its CRLF."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from kakehashi.server.responses import refuse

_REQUEST_LINE_EXTRA = len(" ? HTTP/1.1\r\n")
_HEADER_EXTRA = len(": \r\n")


def head_size(scope: Scope) -> int:
    """The size of the request line and headers of an HTTP or WebSocket (GET) scope, exact up to the HTTP version's
    digits."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    size = len(scope.get("method", "GET")) + target
    return size + _REQUEST_LINE_EXTRA + sum(len(name) + len(value) + _HEADER_EXTRA for name, value in scope["headers"])


class HeaderLimit:
    """Answers 431 (and closes the connection) when the request line and headers exceed `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and head_size(scope) > self.limit:
            message = f"request line and headers are larger than the limit of {self.limit} bytes"
            await refuse(scope, receive, send, 431, message, {"Connection": "close"})
            return
        await self.app(scope, receive, send)
