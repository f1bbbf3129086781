"""ASGI middleware that refuses requests before routing: paths with encoded separators (so `%2F..%2F` can never
become part of a name), and new requests while the server drains."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from kakehashi.server.responses import refuse
from kakehashi.server.state import DRAINING_REASON, ServerState

# percent-encoded '/', '\' and NUL: a path segment (a model name or version) must never contain them
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|00)", re.IGNORECASE)


class PathGuard:
    """Answers 400 for a request path holding an encoded '/', '\\' or NUL instead of routing it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or b""
        if scope["type"] in ("http", "websocket") and _ENCODED_SEPARATOR.search(raw_path):
            message = (
                "invalid path: model names and versions cannot contain '/', '\\' or NUL (encoded as %2F, %5C, %00)"
            )
            await refuse(scope, receive, send, 400, message)
            return
        await self.app(scope, receive, send)


class DrainGuard:
    """While draining, answers 503 (`Connection: close`) to every new request but liveness and readiness, and
    closes every new WebSocket (1013)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.state.draining
            and scope["type"] in ("http", "websocket")
            and not scope["path"].startswith("/v2/health/")
        ):
            await refuse(scope, receive, send, 503, DRAINING_REASON, {"Connection": "close", "Retry-After": "1"})
            return
        await self.app(scope, receive, send)
