"""The OpenAPI document's endpoint (`/openapi.json`) and the `/docs` page (Swagger UI shipped offline)."""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from kakehashi.server.responses import JSONBytes

STATIC = Path(str(resources.files("kakehashi.server") / "static"))


@cache
def _document() -> bytes:
    """The document as JSON, built at the first request for it (its models' schemas are not needed before)."""
    from kakehashi.server.openapi_document import SPEC

    return orjson.dumps(SPEC)


async def openapi_json(request: Request) -> Response:
    return JSONBytes(await asyncio.to_thread(_document))


async def docs_page(request: Request) -> Response:
    return FileResponse(STATIC / "docs.html")


async def docs_init(request: Request) -> Response:
    return FileResponse(STATIC / "swagger-init.js", media_type="text/javascript")


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/swagger-init.js", docs_init, methods=["GET"]),
    Mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui"),
]
