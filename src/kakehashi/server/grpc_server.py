"""The Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`), on the HTTP server's event loop.

Every call goes to the same model repository, handles and batchers as HTTP; answers reuse the JSON forms of
metadata, configuration, statistics and index (`ParseDict` into the messages), so both transports agree.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps

import grpc
from google.protobuf import json_format

from kakehashi.errors import KakehashiError, Unavailable
from kakehashi.protocols.grpc_tensors import encode_grpc_infer_response, parse_grpc_infer_request
from kakehashi.protocols.model_metadata import server_metadata
from kakehashi.protocols.oip_grpc import grpc_service_pb2 as pb
from kakehashi.protocols.oip_grpc import grpc_service_pb2_grpc as service
from kakehashi.server.auth import ApiKeyInterceptor, require_classified
from kakehashi.server.offload import off_loop
from kakehashi.server.state import DRAINING_REASON, ServerState

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

Method = Callable[["InferenceServicer", object, grpc.aio.ServicerContext], Awaitable[object]]


HEALTH = {"ServerLive", "ServerReady"}  # answered while draining, as HTTP's /v2/health/


def _rpc(method: Method) -> Method:
    """Count the call while it runs (a drain waits for it); refuse it while draining (UNAVAILABLE) unless it asks
    for health; answer a `KakehashiError` with its status code and message, anything unexpected with INTERNAL."""
    refused_while_draining = method.__name__ not in HEALTH

    @wraps(method)
    async def call(self: InferenceServicer, request: object, context: grpc.aio.ServicerContext) -> object:
        with self._state.grpc_calls.one():
            try:
                if refused_while_draining and self._state.draining:
                    raise Unavailable(DRAINING_REASON, retry_after=1)  # as HTTP's Retry-After
                return await method(self, request, context)
            except KakehashiError as exc:
                retry_after = getattr(exc, "retry_after", None)
                if retry_after:
                    context.set_trailing_metadata((("retry-after", str(retry_after)),))
                await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
            except Exception:
                log.exception("unexpected error in gRPC %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has the details")
        raise AssertionError("context.abort raises")

    return call


def _message(payload: dict, message: object) -> object:
    return json_format.ParseDict(payload, message)


class InferenceServicer(service.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` over the server's model repository."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._plane = state.plane

    @_rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._state.ready)

    @_rpc
    async def ServerMetadata(self, request, context):
        return _message(server_metadata(), pb.ServerMetadataResponse())

    @_rpc
    async def ModelReady(self, request, context):
        try:
            return pb.ModelReadyResponse(ready=self._plane.servable(request.name, request.version).ready)
        except Unavailable:  # known, but no version loaded (unloaded or failed)
            return pb.ModelReadyResponse(ready=False)

    @_rpc
    async def ModelMetadata(self, request, context):
        return _message(self._plane.metadata(request.name, request.version), pb.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request, context):
        return _message({"config": self._plane.config(request.name, request.version)}, pb.ModelConfigResponse())

    @_rpc
    async def ModelStatistics(self, request, context):
        statistics = self._plane.statistics(request.name, request.version)
        return _message({"model_stats": statistics}, pb.ModelStatisticsResponse())

    @_rpc
    async def RepositoryIndex(self, request, context):
        return _message({"models": self._plane.index(request.ready)}, pb.RepositoryIndexResponse())

    @_rpc
    async def RepositoryModelLoad(self, request, context):
        self._state.require_model_control()
        await self._state.repository.load(request.model_name, list(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request, context):
        self._state.require_model_control()
        await self._state.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @_rpc
    async def ModelInfer(self, request, context):
        with self._plane.request("grpc", request.model_name, request.model_version) as call:
            pool = self._plane.compute
            size = sum(len(raw) for raw in request.raw_input_contents)  # ByteSize() would re-walk the message
            parsed = await off_loop(pool, size, parse_grpc_infer_request, request)
            outputs = await call.infer(parsed.inputs, parsed.outputs, parsed.timeout_ms, _remaining_ms(context))
            size = sum(array.nbytes for array in outputs.values())
            return await off_loop(pool, size, encode_grpc_infer_response, call.name, call.version, outputs, parsed.id)


def _remaining_ms(context: grpc.aio.ServicerContext) -> float | None:
    """What is left of the client's gRPC deadline, in milliseconds (None without a deadline)."""
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.001) * 1000


async def start_grpc_server(state: ServerState) -> grpc.aio.Server:
    """Start serving gRPC on `state.settings.host:grpc_port` (TLS and API keys as for HTTP); messages up to the
    HTTP body limit are accepted."""
    settings = state.settings
    require_classified((), SERVICE)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port another server listens on is refused, never silently shared
        ],
        interceptors=[ApiKeyInterceptor(state.keys, SERVICE.full_name)] if state.keys.enabled else None,
    )
    service.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        if settings.tls_cert and settings.tls_key:
            credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
            server.add_secure_port(address, credentials)
        else:
            server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    await server.start()
    log.info(
        "gRPC (inference.GRPCInferenceService) listening on %s%s", address, " with TLS" if settings.tls_cert else ""
    )
    return server
