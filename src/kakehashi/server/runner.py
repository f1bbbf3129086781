"""Run the HTTP (and gRPC) server: uvicorn with Kakehashi's limits, TLS, and a graceful drain on SIGTERM.

On SIGTERM/SIGINT the server starts draining at once: readiness turns 503, gRPC stops taking calls
(UNAVAILABLE), new HTTP requests get 503, while requests already accepted — running or queued — are answered.
The HTTP port keeps accepting connections for `ACCEPT_LINGER_SECONDS` (answering 503), so connections that
were already queued in the kernel or under way are answered rather than reset; then it closes. When
`grace_seconds` run out, requests still queued are answered 503 (running batches finish); uvicorn cuts whatever
still hangs `BACKSTOP_SECONDS` later, and the process exits (status 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import FrameType
from typing import Iterator

import uvicorn

from kakehashi.server.app import create_app
from kakehashi.server.http_protocol import limited_protocol
from kakehashi.server.state import ServerState

log = logging.getLogger(__name__)
ACCEPT_LINGER_SECONDS = 1.0
BACKSTOP_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the application to drain as soon as the exit signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.state.draining:
            log.info("signal %d: draining (finishing accepted requests, up to %.0f s)", sig,
                     self.state.settings.grace_seconds)
            self.state.draining = True
            loop = self.state.loop
            if loop is not None:
                loop.call_soon_threadsafe(self._start_drain)
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self.state.drain_task = asyncio.ensure_future(self.state.drain())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.sleep(min(ACCEPT_LINGER_SECONDS, self.state.settings.grace_seconds))
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()  # drained cleanly: exit 0 instead of re-raising the signal


def run(state: ServerState, log_level: str, access_log: bool) -> None:
    settings = state.settings
    config = uvicorn.Config(
        create_app(state), host=settings.host, port=settings.port, log_level=log_level, access_log=access_log,
        http=limited_protocol(settings.max_header_bytes),
        # a backstop: the drain answers what is still queued when the grace runs out; this cuts what then hangs
        timeout_graceful_shutdown=round(settings.grace_seconds) + BACKSTOP_SECONDS,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    DrainingServer(config, state).run()
