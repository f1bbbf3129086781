"""JSON responses (orjson) and the `{"error": message}` form every failure takes."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kakehashi.errors import KakehashiError

log = logging.getLogger(__name__)


class JSONBytes(Response):
    """A response whose body is already JSON bytes, or any object orjson can serialise."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBytes:
    return JSONBytes({"error": message}, status_code=status, headers=headers)


async def on_kakehashi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KakehashiError)
    retry_after = getattr(exc, "retry_after", None)
    return error_response(exc.status, exc.message, {"Retry-After": str(retry_after)} if retry_after else None)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """The body ended before its declared length: the client left, or its chunked encoding was malformed. Nothing
    of ours failed: a 400 (reaching the client only if it still listens), and no traceback in the log."""
    log.debug("%s %s: the request body ended early", request.method, request.url.path)
    return error_response(
        400, "the request body ended early (the client disconnected, or its chunked encoding is malformed)"
    )


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error; the server log has the details")


# WebSocket close codes for refusals before the handshake is accepted (RFC 6455 §7.4.1)
_WS_CLOSE = {401: 1008, 403: 1008, 404: 1008, 429: 1013, 431: 1009, 503: 1013}
_WS_REASON_BYTES = 123  # the most a close frame's reason may hold


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    """Refuse an HTTP request (`{"error": message}` with `status`) or a WebSocket before its handshake (closed with
    the code nearest to `status`, the message as its reason): middlewares cover both alike."""
    if scope["type"] == "websocket":
        reason = message.encode()[:_WS_REASON_BYTES].decode(errors="ignore")
        await send({"type": "websocket.close", "code": _WS_CLOSE.get(status, 1008), "reason": reason})
        return
    await error_response(status, message, headers)(scope, receive, send)
