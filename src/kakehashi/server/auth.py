"""Optional API keys for HTTP and gRPC: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

Ordinary keys come from `KAKEHASHI_API_KEYS` (comma-separated) and/or `--api-keys-file` (one key a line, `#`
comments); admin keys from `KAKEHASHI_ADMIN_KEYS` and/or `--admin-keys-file`. They are compared as SHA-256
digests with `hmac.compare_digest`, against every key without stopping early, so neither a key's content nor its
length shows in the time taken.

Every HTTP route and gRPC method is classified here, explicitly (`HTTP_ACCESS`, `GRPC_ACCESS`): open (the
protocol's health API — server and model readiness — the API docs and the web page's static files), keyed (any
key), or control (model load and unload: an admin key; an ordinary key gets 403 / PERMISSION_DENIED). A path that
matches no route needs a key, so a 404 tells nothing to a client without one. A missing key is a bare
401 / UNAUTHENTICATED. A server with an unclassified route or method does not start (`require_classified`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from kakehashi.errors import KakehashiError
from kakehashi.server.responses import refuse

KEYS_ENV = "KAKEHASHI_API_KEYS"
ADMIN_KEYS_ENV = "KAKEHASHI_ADMIN_KEYS"
ADMIN_NEEDED = "this call controls the served models and needs an admin key (--admin-keys-file or KAKEHASHI_ADMIN_KEYS)"


class Access(IntEnum):
    """What a caller must present: nothing, any key, or an admin key."""

    OPEN = 0
    KEY = 1
    ADMIN = 2


OPEN, KEY, ADMIN = Access.OPEN, Access.KEY, Access.ADMIN

# by route path, as in the app's routes (a Mount by its prefix); "METHOD path" where one method of a path differs
HTTP_ACCESS: dict[str, Access] = {
    "/": OPEN,
    "/web": OPEN,
    "/docs": OPEN,
    "/docs/swagger-init.js": OPEN,
    "/docs/assets": OPEN,
    "/openapi.json": OPEN,
    "/v2/health/live": OPEN,
    "/v2/health/ready": OPEN,
    "/v2/models/{model}/ready": OPEN,
    "/v2/models/{model}/versions/{version}/ready": OPEN,
    "/v2": KEY,
    "/v2/models/stats": KEY,
    "/metrics": KEY,
    "/v1/status": KEY,
    "/v2/models/{model}": KEY,
    "/v2/models/{model}/config": KEY,
    "/v2/models/{model}/stats": KEY,
    "/v2/models/{model}/infer": KEY,
    "/v2/models/{model}/versions/{version}": KEY,
    "/v2/models/{model}/versions/{version}/config": KEY,
    "/v2/models/{model}/versions/{version}/stats": KEY,
    "/v2/models/{model}/versions/{version}/infer": KEY,
    "/v1/models/{model}/predict": KEY,
    "/v1/models/{model}/versions/{version}/predict": KEY,
    "/v2/repository/index": KEY,
    "/v2/repository/models/{model}/load": ADMIN,
    "/v2/repository/models/{model}/unload": ADMIN,
    "/v1/streams": KEY,
    "POST /v1/streams": ADMIN,  # the server connects to the URL it is given
    "/v1/streams/{stream}": KEY,
    "DELETE /v1/streams/{stream}": ADMIN,
    "/v1/streams/{stream}/frame.jpg": KEY,
    "/v1/streams/{stream}/results": KEY,
    "/v1/streams/{stream}/ws": KEY,
    "/v1/events": KEY,
}

GRPC_ACCESS: dict[str, Access] = {  # by method name in `inference.GRPCInferenceService`
    "ServerLive": OPEN,
    "ServerReady": OPEN,
    "ModelReady": OPEN,
    "ServerMetadata": KEY,
    "ModelMetadata": KEY,
    "ModelConfig": KEY,
    "ModelStatistics": KEY,
    "ModelInfer": KEY,
    "RepositoryIndex": KEY,
    "RepositoryModelLoad": ADMIN,
    "RepositoryModelUnload": ADMIN,
}


class Forbidden(KakehashiError):
    """The caller may not do this (HTTP 403 / PERMISSION_DENIED)."""

    status = 403


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _digests(keys: Iterable[str]) -> list[bytes]:
    return [_digest(key) for key in {k.strip() for k in keys} if key]


def _keys(environ: Mapping[str, str], variable: str, file: Path | None) -> list[str]:
    keys = environ.get(variable, "").split(",")
    if file is not None:
        keys += [line.split("#", 1)[0] for line in file.read_text().splitlines()]
    return keys


class ApiKeys:
    """The accepted ordinary and admin keys (as digests); none at all means authentication is off. An admin key
    is also accepted wherever an ordinary key is."""

    def __init__(self, keys: Iterable[str], admin: Iterable[str] = ()) -> None:
        self._digests = _digests(keys)
        self._admin = _digests(admin)

    @classmethod
    def load(
        cls, file: Path | None, admin_file: Path | None = None, environ: Mapping[str, str] = os.environ
    ) -> ApiKeys:
        """Keys from `KAKEHASHI_API_KEYS` and `file`, admin keys from `KAKEHASHI_ADMIN_KEYS` and `admin_file`
        (unreadable file → `OSError`)."""
        return cls(_keys(environ, KEYS_ENV, file), _keys(environ, ADMIN_KEYS_ENV, admin_file))

    @property
    def enabled(self) -> bool:
        return bool(self._digests or self._admin)

    def access(self, authorization: str | None, api_key: str | None) -> Access:
        """What the bearer token or the X-API-Key value grants: ADMIN, KEY, or OPEN (no valid key)."""
        given = api_key
        if authorization and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        if not given:
            return OPEN
        digest = _digest(given)
        ordinary = admin = False
        for known in self._digests:
            ordinary |= hmac.compare_digest(digest, known)
        for known in self._admin:
            admin |= hmac.compare_digest(digest, known)
        return ADMIN if admin else KEY if ordinary else OPEN


def route_access(method: str, path: str) -> Access:
    """The class of `method` on the route `path` (a WebSocket's method is GET)."""
    return HTTP_ACCESS.get(f"{method} {path}", HTTP_ACCESS[path])


def _path(route: BaseRoute) -> str | None:
    """A route's path template (a Mount's prefix); `BaseRoute` itself declares none."""
    return getattr(route, "path", None)


def require_classified(routes: Sequence[BaseRoute], service: ServiceDescriptor | None = None) -> None:
    """Raise `RuntimeError` (the server does not start) for a route or gRPC method with no access class."""
    missing = [str(_path(route) or route) for route in routes if _path(route) not in HTTP_ACCESS]
    if service is not None:
        missing += [f"gRPC {name}" for name in service.methods_by_name if name not in GRPC_ACCESS]
    if missing:
        raise RuntimeError(f"no access class in kakehashi.server.auth (HTTP_ACCESS / GRPC_ACCESS) for {missing}")


class ApiKeyMiddleware:
    """ASGI middleware: each HTTP request and WebSocket needs what its route's class asks (401 without a key, 403
    with an ordinary key on a control route; a WebSocket is closed with 1008 before its handshake)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.keys = keys
        self.routes = routes

    def required(self, scope: Scope) -> Access:
        """The class of the route the router will pick (the first full match, else the first path match: 405);
        a path no route matches needs a key."""
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route_access(scope.get("method", "GET"), str(_path(route)))
            if match is Match.PARTIAL and partial is None:
                partial = HTTP_ACCESS[str(_path(route))]
        return KEY if partial is None else partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        required = self.required(scope) if scope["type"] in ("http", "websocket") else OPEN
        if required is OPEN:
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"authorization", b"x-api-key")}
        granted = self.keys.access(headers.get(b"authorization"), headers.get(b"x-api-key"))
        if granted >= required:
            await self.app(scope, receive, send)
        elif granted is OPEN:
            await refuse(scope, receive, send, 401, "unauthorized", {"WWW-Authenticate": "Bearer"})
        else:
            await refuse(scope, receive, send, 403, ADMIN_NEEDED)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """gRPC: each method needs what its class asks (UNAUTHENTICATED without a key, PERMISSION_DENIED with an
    ordinary key on a control method) of `service` (its full name); other services' methods need a key."""

    def __init__(self, keys: ApiKeys, service: str) -> None:
        self.keys = keys
        self._service = service

        def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
            async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
                await context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)

        self._unauthenticated = refusal(grpc.StatusCode.UNAUTHENTICATED, "unauthorized")
        self._denied = refusal(grpc.StatusCode.PERMISSION_DENIED, ADMIN_NEEDED)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        service, _, method = details.method.lstrip("/").partition("/")
        required = GRPC_ACCESS.get(method, KEY) if service == self._service else KEY
        if required is OPEN:
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        granted = self.keys.access(metadata.get("authorization"), metadata.get("x-api-key"))
        if granted >= required:
            return await continuation(details)
        return self._unauthenticated if granted is OPEN else self._denied
