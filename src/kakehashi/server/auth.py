"""Optional API keys for HTTP and gRPC: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Keys come from the `KAKEHASHI_API_KEYS` environment variable (comma-separated) and/or a file (one key a line,
`#` comments). They are compared as SHA-256 digests with `hmac.compare_digest`, against every key without
stopping early, so neither a key's content nor its length shows in the time taken. The protocol's health API
(server and model readiness), the API docs and the web page's static files stay open (the page asks for a key);
a failure is a bare 401 / UNAUTHENTICATED.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Iterable

import grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from kakehashi.server.responses import error_response

KEYS_ENV = "KAKEHASHI_API_KEYS"
OPEN_PATHS = ("/", "/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json")
OPEN_PREFIXES = ("/docs/", "/web/")  # the API docs and the web page's static files: no data in them
# the protocol's health API (server and model readiness, as probes and load balancers ask it) stays open
MODEL_READY = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/ready")
OPEN_GRPC_METHODS = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady",
                     "/inference.GRPCInferenceService/ModelReady")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys (as digests); empty means authentication is off."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(key) for key in {k.strip() for k in keys} if key]

    @classmethod
    def load(cls, file: Path | None, environ: dict[str, str] = os.environ) -> "ApiKeys":
        """Keys from `KAKEHASHI_API_KEYS` and `file` (unreadable file → `OSError`)."""
        keys = environ.get(KEYS_ENV, "").split(",")
        if file is not None:
            keys += [line.split("#", 1)[0] for line in file.read_text().splitlines()]
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts(self, authorization: str | None, api_key: str | None) -> bool:
        """True if the bearer token or the X-API-Key value is one of the keys."""
        given = api_key
        if authorization and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        if not given:
            return False
        digest = _digest(given)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched


class ApiKeyMiddleware:
    """ASGI middleware: every HTTP request outside the open paths needs a valid key (else 401)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
                or MODEL_READY.fullmatch(path)):
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"authorization", b"x-api-key")}
        if self.keys.accepts(headers.get(b"authorization"), headers.get(b"x-api-key")):
            await self.app(scope, receive, send)
            return
        await error_response(401, "unauthorized", {"WWW-Authenticate": "Bearer"})(scope, receive, send)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """gRPC: every method but ServerLive/ServerReady needs `authorization: Bearer <key>` or `x-api-key`."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

        async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthorized")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method in OPEN_GRPC_METHODS:
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        if self.keys.accepts(metadata.get("authorization"), metadata.get("x-api-key")):
            return await continuation(details)
        return self._refusal
