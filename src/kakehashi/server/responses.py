"""JSON responses (orjson) and the `{"error": message}` form every failure takes."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

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
