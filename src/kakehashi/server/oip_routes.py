"""KServe Open Inference Protocol v2 over HTTP: health, metadata, readiness and JSON infer."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from kakehashi.dataplane import Call
from kakehashi.protocols.model_metadata import server_metadata
from kakehashi.protocols.oip_json import encode_infer_response, parse_infer_request
from kakehashi.server.compression import decompress
from kakehashi.server.disconnect import unless_disconnected
from kakehashi.server.offload import off_loop
from kakehashi.server.responses import JSONBytes, error_response
from kakehashi.server.state import data_plane, server_state


async def live(request: Request) -> Response:
    return JSONBytes({"live": True})


async def ready(request: Request) -> Response:
    is_ready = server_state(request).ready
    return JSONBytes({"ready": is_ready}, status_code=200 if is_ready else 503)


async def server_metadata_route(request: Request) -> Response:
    return JSONBytes(server_metadata())


def _model(request: Request) -> tuple[str, str | None]:
    return request.path_params["model"], request.path_params.get("version")


async def model_metadata_route(request: Request) -> Response:
    return JSONBytes(data_plane(request).metadata(*_model(request)))


async def model_ready(request: Request) -> Response:
    servable = data_plane(request).servable(*_model(request))
    if servable.ready:
        return JSONBytes({"name": servable.name, "version": str(servable.version), "ready": True})
    return error_response(
        503,
        f"model '{servable.name}' version {servable.version} is not ready "
        f"({servable.state.value}){': ' + servable.reason if servable.reason else ''}",
    )


async def infer(request: Request) -> Response:
    plane = data_plane(request)
    with plane.request("http", *_model(request), gone=(ClientDisconnect,)) as call:
        return await _infer(request, call)


async def _infer(request: Request, call: Call) -> Response:
    pool = data_plane(request).compute
    body = await decompress(
        await request.body(),
        request.headers.get("content-encoding"),
        server_state(request).settings.max_body_bytes,
        pool,
    )
    header_length = request.headers.get("inference-header-content-length")
    parsed = await off_loop(pool, len(body), parse_infer_request, body, header_length)
    outputs = await unless_disconnected(request, call.infer(parsed.inputs, parsed.outputs, parsed.timeout_ms))
    size = sum(array.size for array in outputs.values()) * 8
    answer, json_length = await off_loop(pool, size, encode_infer_response, call.name, call.version, outputs, parsed)
    if json_length is None:
        return JSONBytes(answer)
    return Response(
        answer, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(json_length)}
    )


async def config(request: Request) -> Response:
    return JSONBytes(data_plane(request).config(*_model(request)))


async def stats(request: Request) -> Response:
    params = request.path_params
    return JSONBytes({"model_stats": data_plane(request).statistics(params.get("model"), params.get("version"))})


def _model_routes(prefix: str) -> list[Route]:
    return [
        Route(prefix, model_metadata_route, methods=["GET"]),
        Route(prefix + "/config", config, methods=["GET"]),
        Route(prefix + "/stats", stats, methods=["GET"]),
        Route(prefix + "/ready", model_ready, methods=["GET"]),
        Route(prefix + "/infer", infer, methods=["POST"]),
    ]


routes = [
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2", server_metadata_route, methods=["GET"]),
    Route("/v2/models/stats", stats, methods=["GET"]),
    *_model_routes("/v2/models/{model}"),
    *_model_routes("/v2/models/{model}/versions/{version}"),
]
