"""The web page (`GET /`: static files shipped in the package) and the status it polls (`GET /v1/status`)."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kakehashi.server.responses import JSONBytes
from kakehashi.server.state import server_state
from kakehashi.statistics import live_figures

WEB = Path(str(resources.files("kakehashi.server") / "static" / "web"))


async def page(request: Request) -> Response:
    return FileResponse(WEB / "index.html")


async def status(request: Request) -> Response:
    """Every model version with its state, and the live figures of those that are loaded."""
    state = server_state(request)
    repository = state.repository
    figures = {
        f"{h.name}:{h.version}": live_figures(h) | {"runtime": h.runtime, "precision": h.precision}
        for h in repository.versions_of()
    }
    return JSONBytes({"time": time.time(), "ready": state.ready, "models": repository.index(), "figures": figures})


routes = [
    Route("/", page, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    Mount("/web", StaticFiles(directory=str(WEB)), name="web"),
]
