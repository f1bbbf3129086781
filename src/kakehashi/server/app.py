"""The HTTP application: routes, error handling, body limit, and model loading in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect

from kakehashi.errors import KakehashiError
from kakehashi.memory import rest_when_idle
from kakehashi.server import (
    metrics_routes,
    oip_routes,
    openapi,
    repository_routes,
    stream_routes,
    vision_routes,
    web_routes,
)
from kakehashi.server.auth import ApiKeyMiddleware, require_classified
from kakehashi.server.body_limit import BodyLimit
from kakehashi.server.header_limit import HeaderLimit
from kakehashi.server.path_guard import DrainGuard, PathGuard
from kakehashi.server.read_timeout import BodyReadTimeout
from kakehashi.server.responses import (
    on_client_disconnect,
    on_http_error,
    on_kakehashi_error,
    on_unexpected_error,
)
from kakehashi.server.state import ServerState
from kakehashi.server.unread_body import CloseAfterUnreadBody
from kakehashi.streams.manager import StreamManager

log = logging.getLogger(__name__)


def create_app(state: ServerState) -> Starlette:
    """An ASGI app serving `state.repository`; models load in a thread after start-up."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def load() -> None:
            if not state.loaded:  # an embedder (Ray Serve) may have loaded the models before starting the app
                await state.repository.load_at_start()
            try:
                await streams.open(state.config.streams)
                state.streams = streams
            except Exception:  # e.g. the outbox's folder cannot be written: models serve, streams answer 503
                log.exception("streams and events not started (outbox %s)", streams.outbox_path)
            state.loaded = True  # ready once the configured streams started too
            log.info("models loaded; server %s", "ready" if state.ready else "NOT ready (see the model errors above)")
            if state.settings.model_control == "poll" and not state.draining:
                await state.repository.watch(state.settings.poll_seconds)

        state.loop = asyncio.get_running_loop()
        streams = StreamManager(
            state.plane,
            state.plane.compute,
            state.config.events,
            state.settings.port,
            state.settings.allow_local_streams,
        )
        if state.settings.grpc_port:
            from kakehashi.server.grpc_server import start_grpc_server  # only processes serving gRPC load its stubs

            state.grpc_server = await start_grpc_server(state)
        loading = asyncio.create_task(load())
        resting = asyncio.create_task(
            rest_when_idle(lambda: state.plane.begun, lambda: state.plane.open, state.repository.rest)
        )
        try:
            yield
        finally:
            resting.cancel()  # a release under way ends first: models are not closed under it
            await asyncio.gather(resting, return_exceptions=True)
            state.draining = True
            if state.drain_task is not None:
                state.drain_task.cancel()  # everything finished within the grace: nothing left to cut
            await state.stop_grpc(state.settings.grace_seconds)  # stopped already after a drain (runner.py)
            if state.loaded:
                loading.cancel()  # stops the repository poller; a load in progress is left to finish
            await asyncio.gather(loading, return_exceptions=True)
            await streams.close()  # frames in flight are answered and their events recorded before models close
            await state.repository.close_all()

    routes = [
        *oip_routes.routes,
        *repository_routes.routes,
        *vision_routes.routes,
        *metrics_routes.routes,
        *openapi.routes,
        *web_routes.routes,
        *stream_routes.routes,
    ]
    require_classified(routes)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(CloseAfterUnreadBody),
            Middleware(HeaderLimit, limit=state.settings.max_header_bytes),
            Middleware(DrainGuard, state=state),
            Middleware(PathGuard),
            *([Middleware(ApiKeyMiddleware, keys=state.keys, routes=routes)] if state.keys.enabled else []),
            Middleware(BodyLimit, limit=state.settings.max_body_bytes),
            Middleware(BodyReadTimeout, seconds=state.settings.body_timeout_seconds),
        ],
        exception_handlers={
            KakehashiError: on_kakehashi_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_client_disconnect,
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.kakehashi = state
    return app
