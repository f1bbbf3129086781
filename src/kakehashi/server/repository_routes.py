"""The model repository extension: index, load (or reload) and unload models while serving (with
`--model-control explicit` or `poll`; else 403)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kakehashi.errors import InvalidInput
from kakehashi.server.responses import JSONBytes
from kakehashi.server.state import server_state


async def _options(request: Request) -> dict:
    """The optional JSON object body of a repository request."""
    body = await request.body()
    try:
        options = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidInput("the request body must be a JSON object")
    return options


async def index(request: Request) -> Response:
    ready_only = (await _options(request)).get("ready") is True
    return JSONBytes(server_state(request).repository.index(ready_only))


async def load(request: Request) -> Response:
    server_state(request).require_model_control()
    parameters = (await _options(request)).get("parameters") or {}
    await server_state(request).repository.load(request.path_params["model"], list(parameters))
    return JSONBytes({})


async def unload(request: Request) -> Response:
    server_state(request).require_model_control()
    await server_state(request).repository.unload(request.path_params["model"])
    return JSONBytes({})


routes = [
    Route("/v2/repository/index", index, methods=["POST"]),
    Route("/v2/repository/models/{model}/load", load, methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", unload, methods=["POST"]),
]
