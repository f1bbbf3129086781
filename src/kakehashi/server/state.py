"""What the HTTP routes share: the model repository and whether loading has finished."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from kakehashi.repository.handle import ModelHandle
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Settings


@dataclass
class ServerState:
    settings: Settings
    repository: ModelRepository
    loaded: bool = False

    @property
    def ready(self) -> bool:
        return self.loaded and self.repository.ready


def server_state(request: Request) -> ServerState:
    return request.app.state.kakehashi


def model_handle(request: Request) -> ModelHandle:
    """The handle named by the `model` (and optional `version`) path parameters."""
    params = request.path_params
    handle = server_state(request).repository.get(params["model"], params.get("version"))
    tracker = getattr(request.state, "tracker", None)
    if tracker is not None:
        tracker.labels = {"model": handle.name, "version": str(handle.version)}
    return handle
