"""Run the HTTP (and gRPC) server: Granian (Rust HTTP/1.1, embedded in this process's event loop) with Kakehashi's
limits, TLS, and a graceful drain on SIGTERM.

Limits, through Granian's public settings: the request line and headers must fit `max_header_bytes` (431 above,
made exact by `header_limit.HeaderLimit`) and arrive within `header_timeout_seconds` of the connection's first
byte — or of its previous answer, which also closes idle keep-alive connections; at most `max_connections`
connections are served at once (more wait in the listen backlog until one closes). A stalled body is cut by
`read_timeout.BodyReadTimeout`.

On SIGTERM/SIGINT the server starts draining at once: readiness turns 503, new HTTP requests get 503 and new gRPC
calls UNAVAILABLE, while requests already accepted — running or queued — are answered. Both ports keep accepting
(and refusing) for at least `ACCEPT_LINGER_SECONDS` and until every request and call in flight is answered, so
neither a connection queued in the kernel nor a request still arriving is reset, and no call accepted is answered
CANCELLED; then they close.
When `grace_seconds` run out, requests still queued, or queued later, are answered 503 (running batches finish);
what still hangs `BACKSTOP_SECONDS` later is cut. The process exits with status 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket

import uvloop
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from kakehashi.server.app import create_app
from kakehashi.server.in_flight import InFlight
from kakehashi.server.state import ServerState

log = logging.getLogger(__name__)
ACCEPT_LINGER_SECONDS = 1.0
BACKSTOP_SECONDS = 5.0
MIN_BUFFER_BYTES = 8192  # the smallest read buffer Granian's HTTP parser (hyper) accepts


def _granian(app: InFlight, state: ServerState, log_level: str, access_log: bool) -> Server:
    settings = state.settings
    return Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,  # no HTTP/2 sniffing: the header timeout then runs from the first byte
        backlog=max(1024, settings.max_connections),
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.header_timeout_seconds * 1000),
            max_buffer_size=max(MIN_BUFFER_BYTES, settings.max_header_bytes),
        ),
        # Granian's records go to the root logger, formatted like ours
        log_level=LogLevels(log_level),
        log_access=access_log,
        log_dictconfig={
            "loggers": {
                name: {"level": log_level.upper(), "propagate": True} for name in ("_granian", "granian.access")
            }
        },
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
        ssl_protocol_min=SSLProtocols.tls12,
    )


def _refuse_a_taken_port(host: str, port: int, protocol: str) -> None:
    """Stop with a clear message when another process listens on `host:port`, before anything starts. Granian
    binds with SO_REUSEPORT (a socket per worker), as gRPC does by default: on a port another server bound that way
    it would listen beside it, and the kernel would share the connections between the two servers without a word.
    A bind without SO_REUSEPORT fails instead."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections closing from a last run are fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "another process listens on it" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise SystemExit(f"cannot serve {protocol} on {host}:{port}: {reason}") from None


async def serve(state: ServerState, log_level: str, access_log: bool) -> None:
    """Serve until SIGTERM/SIGINT, then drain (see the module's docstring)."""
    _refuse_a_taken_port(state.settings.host, state.settings.port, "HTTP")
    _refuse_a_taken_port(state.settings.host, state.settings.grpc_port, "gRPC")
    app = InFlight(create_app(state))
    server = _granian(app, state, log_level, access_log)
    exit_signal = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, exit_signal.set)
    serving = asyncio.create_task(server.serve())
    signalled = asyncio.create_task(exit_signal.wait())
    await asyncio.wait({serving, signalled}, return_when=asyncio.FIRST_COMPLETED)
    settings = state.settings
    if serving.done():  # it failed to start (e.g. the port is taken), or its worker stopped
        signalled.cancel()
        reason = serving.exception() or "the server stopped (see the log above)"
        raise SystemExit(f"cannot serve HTTP on {settings.host}:{settings.port}: {reason}")
    log.info("exit signal: draining (finishing accepted requests, up to %.0f s)", settings.grace_seconds)
    state.draining = True
    state.drain_task = asyncio.create_task(state.drain())
    grace = BACKSTOP_SECONDS  # what gRPC's stop gives a call it hands on at the last moment
    try:
        await asyncio.sleep(min(ACCEPT_LINGER_SECONDS, settings.grace_seconds))
        # both ports stay open, refusing new work, until every HTTP request and gRPC call accepted is answered
        await asyncio.wait_for(
            asyncio.gather(app.calls.idle.wait(), state.grpc_calls.idle.wait()),
            settings.grace_seconds + BACKSTOP_SECONDS,
        )
    except TimeoutError:
        grace = 0
        unanswered = app.calls.count + state.grpc_calls.count
        log.warning("%d request(s) still unanswered %.0f s after the grace period: cut", unanswered, BACKSTOP_SECONDS)
    await state.stop_grpc(grace)
    server.stop()
    try:
        await asyncio.wait_for(serving, BACKSTOP_SECONDS)
    except TimeoutError:
        log.warning("the HTTP server did not stop within %.0f s: cut", BACKSTOP_SECONDS)


def run(state: ServerState, log_level: str, access_log: bool) -> None:
    uvloop.run(serve(state, log_level, access_log))
