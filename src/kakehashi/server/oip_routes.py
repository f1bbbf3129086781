"""KServe Open Inference Protocol v2 over HTTP: health, metadata, readiness and JSON infer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kakehashi.protocols.model_metadata import model_metadata, server_metadata
from kakehashi.protocols.oip_json import encode_infer_response, parse_infer_request, select_outputs
from kakehashi.protocols.triton_config import model_config
from kakehashi.repository.handle import ModelHandle
from kakehashi.server.compression import decompress
from kakehashi.server.offload import off_loop
from kakehashi.server.responses import JSONBytes, error_response
from kakehashi.server.state import model_handle, server_state
from kakehashi.server.tracking import tracked, unless_disconnected
from kakehashi.statistics import model_statistics


async def live(request: Request) -> Response:
    return JSONBytes({"live": True})


async def ready(request: Request) -> Response:
    is_ready = server_state(request).ready
    return JSONBytes({"ready": is_ready}, status_code=200 if is_ready else 503)


async def server_metadata_route(request: Request) -> Response:
    return JSONBytes(server_metadata())


async def model_metadata_route(request: Request) -> Response:
    handle = model_handle(request)
    return JSONBytes(model_metadata(handle, list(server_state(request).repository.entries[handle.name].handles)))


async def model_ready(request: Request) -> Response:
    handle = model_handle(request)
    if handle.ready:
        return JSONBytes({"name": handle.name, "version": str(handle.version), "ready": True})
    return error_response(
        503,
        f"model '{handle.name}' version {handle.version} is not ready "
        f"({handle.state.value}){': ' + handle.reason if handle.reason else ''}",
    )


@tracked("http")
async def infer(request: Request) -> Response:
    handle = model_handle(request)
    with handle.serving():
        return await _infer(request, handle)


async def _infer(request: Request, handle: ModelHandle) -> Response:
    pool = server_state(request).repository.compute
    body = await decompress(
        await request.body(),
        request.headers.get("content-encoding"),
        server_state(request).settings.max_body_bytes,
        pool,
    )
    header_length = request.headers.get("inference-header-content-length")
    parsed = await off_loop(pool, len(body), parse_infer_request, body, header_length)
    results = await unless_disconnected(request, handle.infer(parsed.inputs, parsed.timeout_ms))
    outputs = select_outputs(results, parsed.outputs)
    size = sum(array.size for array in outputs.values()) * 8
    answer, json_length = await off_loop(
        pool, size, encode_infer_response, handle.name, handle.version, outputs, parsed
    )
    if json_length is None:
        return JSONBytes(answer)
    return Response(
        answer, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(json_length)}
    )


async def config(request: Request) -> Response:
    return JSONBytes(model_config(model_handle(request)))


async def stats(request: Request) -> Response:
    params = request.path_params
    handles = server_state(request).repository.versions_of(params.get("model"), params.get("version"))
    return JSONBytes({"model_stats": [model_statistics(h) for h in handles]})


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
