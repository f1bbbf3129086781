"""What the transports share: the model repository, the API keys, and whether the server is loaded or draining."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from kakehashi.dataplane import DataPlane
from kakehashi.repository.repository import ModelRepository
from kakehashi.server.auth import ApiKeys, Forbidden
from kakehashi.server.in_flight import Calls
from kakehashi.settings import Settings
from kakehashi.streams.config import ServerConfig

if TYPE_CHECKING:
    from kakehashi.streams.manager import StreamManager

log = logging.getLogger(__name__)
DRAINING_REASON = "the server is shutting down; retry on another replica"
LATE_REASON = (
    "the server is shutting down and its grace period ran out before this request's turn; retry on another replica"
)


@dataclass
class ServerState:
    settings: Settings
    repository: ModelRepository
    keys: ApiKeys = field(default_factory=lambda: ApiKeys(()))
    config: ServerConfig = field(default_factory=ServerConfig)  # `--config`: streams and event sinks
    streams: StreamManager | None = None  # opened once the models are loaded
    loaded: bool = False
    draining: bool = False  # set at the exit signal: accepted requests finish, new ones are refused
    loop: asyncio.AbstractEventLoop | None = None
    grpc_server: Any = None  # grpc.aio.Server when gRPC is on (typed loosely: grpc loads only when used)
    drain_task: asyncio.Task | None = None  # `drain`, started at the exit signal (held: the loop keeps tasks weakly)
    grpc_calls: Calls = field(default_factory=Calls)  # gRPC calls being answered
    grpc_stopping: asyncio.Future | None = None  # the one gRPC stop, once started
    plane: DataPlane = field(init=False)  # what the transports call

    def __post_init__(self) -> None:
        self.plane = DataPlane(self.repository)

    @property
    def ready(self) -> bool:
        """Loaded, not draining, and the repository ready (see `ModelRepository.ready`)."""
        return self.loaded and not self.draining and self.repository.ready

    def require_model_control(self) -> None:
        """Refuse (403) a load or unload unless the server was started with model control on."""
        if self.settings.model_control == "none":
            raise Forbidden(
                "loading and unloading models is off on this server; start it with --model-control "
                "explicit (or poll) to allow it"
            )

    async def drain(self) -> None:
        """From the exit signal: give accepted requests the grace period; from then on answer 503 whatever waits in a
        model's queue (queued before, or reaching it late from decoding), so each gets an answer rather than a cut
        connection. Runs until cancelled."""
        if self.streams is not None:
            self.streams.end_followers()  # SSE and WebSocket followers end now: they hold no answer to wait for
        await asyncio.sleep(self.settings.grace_seconds)
        count = self.repository.abandon_queued(LATE_REASON)
        if count:
            log.warning("grace period over: %d queued request(s) answered 503", count)
        await self._answer_late_arrivals()

    async def _answer_late_arrivals(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.repository.abandon_queued(LATE_REASON)

    async def stop_grpc(self, grace: float) -> None:
        """Stop the gRPC server, giving the calls it is answering `grace` seconds; every caller waits for the same
        stop (a cancelled caller does not cut it short).

        A drain calls it once the calls handed to a handler are answered (or the grace period ran out): until then
        the server keeps taking calls and the handlers refuse new ones (UNAVAILABLE, see `draining`), because
        gRPC's own stop answers a call it received but had not yet handed to a handler with a bare CANCELLED
        (grpc/grpc#41785), as if the client had cancelled it."""
        if self.grpc_stopping is None:
            server, self.grpc_server = self.grpc_server, None
            if server is None:
                return
            self.grpc_stopping = asyncio.ensure_future(server.stop(grace=grace))
        await asyncio.shield(self.grpc_stopping)


def server_state(request: HTTPConnection) -> ServerState:
    return request.app.state.kakehashi


def data_plane(request: HTTPConnection) -> DataPlane:
    return request.app.state.kakehashi.plane
