"""The OpenAPI document for the HTTP API, its bodies from the pydantic models of `kakehashi.protocols` (the
predict parameters' is the model that validates them). Imported at the first request for it (`openapi`): building
it and its models' schemas is a few tens of ms of every start otherwise."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kakehashi import __version__
from kakehashi.protocols import api_schemas
from kakehashi.protocols.predict_answer import Predictions
from kakehashi.protocols.predict_query import QUERY_SCHEMAS
from kakehashi.server.auth import HTTP_ACCESS, OPEN
from kakehashi.server.stream_routes import MAX_SEQ
from kakehashi.streams.config import StreamConfig

COMPONENTS = (
    api_schemas.Error,
    api_schemas.Live,
    api_schemas.Ready,
    api_schemas.ServerMetadata,
    api_schemas.ModelMetadata,
    api_schemas.ModelReady,
    api_schemas.InferRequest,
    api_schemas.InferResponse,
    api_schemas.TritonObject,
    api_schemas.Statistics,
    api_schemas.IndexRequest,
    api_schemas.LoadRequest,
    api_schemas.IndexRow,
    api_schemas.Status,
    Predictions,
    StreamConfig,
)
_PREFIX = "#/components/schemas/"
_NULL = {"type": "null"}
_STATIC = "/{path}"  # after a Mount's prefix: one of its files


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": _PREFIX + model.__name__}


def _content(media_type: str, schema: dict | None = None) -> dict:
    return {media_type: {"schema": schema or {"type": "string"}}}


def _answer(description: str, schema: dict | None = None, media_type: str = "application/json") -> dict:
    return {"description": description, "content": _content(media_type, schema)}


def _json(model: type[BaseModel]) -> dict:
    return _answer("OK", _ref(model))


_ERROR = _answer("Error", _ref(api_schemas.Error))
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_FILE = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
_EMPTY_OBJECT = {"type": "object", "maxProperties": 0}


def _operation(summary: str, responses: dict, *errors: int, **fields: object) -> dict:
    return {"summary": summary, "responses": {**responses, **{str(status): _ERROR for status in errors}}, **fields}


def _query_parameter(name: str, schema: dict) -> dict:
    """A predict parameter as the query string carries it (lists comma-separated, `0,2`)."""
    parameter = {
        "name": name,
        "in": "query",
        "required": False,
        "description": schema.get("description", ""),
        "schema": {key: value for key, value in schema.items() if key not in ("title", "description")},
    }
    if schema["type"] == "array":
        parameter |= {"style": "form", "explode": False}
    return parameter


def _predict(path_parameters: list[dict]) -> dict:
    files = {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}
    form = {**files, **QUERY_SCHEMAS}
    body = {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": form}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }
    return {
        "post": _operation(
            "Detect, segment, estimate poses or classify in one or more images (the model's task says which)",
            {"200": _json(Predictions)},
            400,
            404,
            413,
            415,
            429,
            504,
            parameters=[*path_parameters, *(_query_parameter(n, s) for n, s in QUERY_SCHEMAS.items())],
            requestBody={
                "required": True,
                "description": "Images as multipart/form-data field `file` (repeatable; the parameters may also "
                "be form fields), or one image as the raw body.",
                "content": body,
            },
        )
    }


def _model_paths(prefix: str, parameters: list[dict]) -> dict:
    infer_body = {
        "required": True,
        "description": "JSON tensors, or the binary tensor data extension: a JSON header of "
        "Inference-Header-Content-Length bytes, then the raw tensors.",
        "content": {
            **_content("application/json", _ref(api_schemas.InferRequest)),
            **_content("application/octet-stream", {"type": "string", "format": "binary"}),
        },
    }
    infer_answer = {
        "description": "JSON tensors, or a JSON header and binary tensors when binary outputs were asked for",
        "content": {
            **_content("application/json", _ref(api_schemas.InferResponse)),
            **_content("application/octet-stream", {"type": "string", "format": "binary"}),
        },
    }
    return {
        prefix: {
            "get": _operation("Model metadata", {"200": _json(api_schemas.ModelMetadata)}, 404, parameters=parameters)
        },
        prefix + "/ready": {
            "get": _operation(
                "Model readiness (503: not ready)", {"200": _json(api_schemas.ModelReady)}, 404, parameters=parameters
            )
        },
        prefix + "/config": {
            "get": _operation(
                "Triton model configuration", {"200": _json(api_schemas.TritonObject)}, 404, parameters=parameters
            )
        },
        prefix + "/stats": {
            "get": _operation(
                "Triton statistics for the model", {"200": _json(api_schemas.Statistics)}, 404, parameters=parameters
            )
        },
        prefix + "/infer": {
            "post": _operation(
                "Infer with Open Inference Protocol v2 tensors",
                {"200": infer_answer},
                400,
                404,
                413,
                415,
                429,
                504,
                parameters=parameters,
                requestBody=infer_body,
            )
        },
    }


def _page(summary: str, media_type: str) -> dict:
    return {"get": _operation(summary, {"200": _answer("OK", media_type=media_type)})}


def _files(summary: str) -> dict:
    """A Mount of static files, as `{prefix}/{path}`."""
    return {"get": _operation(summary, {"200": {"description": "The file"}}, 404, parameters=[_FILE])}


def _stream_paths() -> dict:
    stream = [{"name": "stream", "in": "path", "required": True, "schema": {"type": "string"}}]
    any_object = {"type": "object"}
    integer = {"type": "integer"}
    return {
        "/v1/streams": {
            "get": _operation(
                "Every stream with its state and figures, and the event sinks", {"200": _answer("OK", any_object)}
            ),
            "post": _operation(
                "Start a stream: a network source (RTSP, HTTP MJPEG/HLS) through a served model, with tracking, "
                "zones, lines and rules (an admin key when keys are on)",
                {"201": _answer("Started: the stream's status", any_object)},
                400,
                403,
                404,
                409,
                requestBody={"required": True, "content": _content("application/json", _ref(StreamConfig))},
            ),
        },
        "/v1/streams/{stream}": {
            "get": _operation(
                "A stream's state and figures", {"200": _answer("OK", any_object)}, 404, parameters=stream
            ),
            "delete": _operation(
                "Stop a stream (an admin key when keys are on)",
                {"200": _answer("Stopped", any_object)},
                403,
                404,
                parameters=stream,
            ),
        },
        "/v1/streams/{stream}/frame.jpg": {
            "get": _operation(
                "The stream's newest analysed frame, annotated",
                {"200": _answer("The frame", media_type="image/jpeg")},
                404,
                parameters=stream,
            )
        },
        "/v1/streams/{stream}/results": {
            "get": _operation(
                "Each analysed frame's results (detections with track ids, zone and line counts, events) as "
                "Server-Sent Events; the same as JSON messages on the WebSocket `/v1/streams/{stream}/ws`",
                {"200": _answer("An event stream", media_type="text/event-stream")},
                404,
                429,
                parameters=stream,
            )
        },
        "/v1/events": {
            "get": _operation(
                "Recorded events in order, for replay (`after`: the last `seq` seen)",
                {"200": _answer("OK", any_object)},
                400,
                parameters=[
                    {"name": "stream", "in": "query", "required": False, "schema": {"type": "string"}},
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "schema": {**integer, "minimum": 0, "maximum": MAX_SEQ},
                    },
                    {"name": "limit", "in": "query", "required": False, "schema": {**integer, "maximum": 1000}},
                ],
            )
        },
    }


def _paths() -> dict:
    index_rows = {"type": "array", "items": _ref(api_schemas.IndexRow)}
    optional_body = {"required": False, "content": _content("application/json", _ref(api_schemas.LoadRequest))}
    return {
        "/v2/health/live": {"get": _operation("Server liveness", {"200": _json(api_schemas.Live)})},
        "/v2/health/ready": {
            "get": _operation(
                "Server readiness (a model READY, and every expected one)",
                {
                    "200": _json(api_schemas.Ready),
                    "503": _answer("Not ready", {"anyOf": [_ref(api_schemas.Ready), _ref(api_schemas.Error)]}),
                },
            )
        },
        "/v2": {"get": _operation("Server metadata", {"200": _json(api_schemas.ServerMetadata)})},
        **_model_paths("/v2/models/{model}", [_MODEL]),
        **_model_paths("/v2/models/{model}/versions/{version}", [_MODEL, _VERSION]),
        "/v2/models/stats": {
            "get": _operation("Triton statistics for every model", {"200": _json(api_schemas.Statistics)})
        },
        "/v2/repository/index": {
            "post": _operation(
                "Every model and version with its state",
                {"200": _answer("OK", index_rows)},
                400,
                requestBody={
                    "required": False,
                    "content": _content("application/json", _ref(api_schemas.IndexRequest)),
                },
            )
        },
        "/v2/repository/models/{model}/load": {
            "post": _operation(
                "Load or reload a model from disk (no dropped requests; needs --model-control explicit or poll, "
                "and an admin key when keys are on)",
                {"200": _answer("Loaded", _EMPTY_OBJECT)},
                400,
                403,
                404,
                parameters=[_MODEL],
                requestBody=optional_body,
            )
        },
        "/v2/repository/models/{model}/unload": {
            "post": _operation(
                "Stop serving a model (needs --model-control explicit or poll, and an admin key when keys are on)",
                {"200": _answer("Unloaded", _EMPTY_OBJECT)},
                403,
                404,
                parameters=[_MODEL],
            )
        },
        "/metrics": _page("Prometheus metrics", "text/plain"),
        "/v1/models/{model}/predict": _predict([_MODEL]),
        "/v1/models/{model}/versions/{version}/predict": _predict([_MODEL, _VERSION]),
        "/v1/status": {
            "get": _operation(
                "Every model version and live figures (the web page's status panel)", {"200": _json(api_schemas.Status)}
            )
        },
        **_stream_paths(),
        "/": _page("The web page", "text/html"),
        "/web" + _STATIC: _files("The web page's files"),
        "/openapi.json": {"get": _operation("This document", {"200": _answer("OK", {"type": "object"})})},
        "/docs": _page("The API reference (Swagger UI, offline)", "text/html"),
        "/docs/swagger-init.js": _page("The API reference's set-up", "text/javascript"),
        "/docs/assets" + _STATIC: _files("Swagger UI's files"),
    }


_COMMON = {
    "401": {"description": "No valid API key (only when keys are configured)", "content": _ERROR["content"]},
    "431": {"description": "Request line and headers over the limit", "content": _ERROR["content"]},
    "503": {"description": "Not ready, or the server is shutting down", "content": _ERROR["content"]},
}


def _with_common_errors(paths: dict) -> dict:
    """Every operation may answer 431 and 503 (draining); those needing a key, 401; those with a path parameter,
    400 (an encoded separator or NUL, or a model name or version that is not a plain identifier)."""
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            for status, response in _COMMON.items():
                if status != "401" or HTTP_ACCESS[path.removesuffix(_STATIC)] is not OPEN:
                    responses.setdefault(status, response)
            if "{" in path:
                responses.setdefault("400", _ERROR)
    return paths


def _openapi_30(node: object) -> object:
    """pydantic's JSON Schema in OpenAPI 3.0's dialect, the one the bundled Swagger UI (4.15) renders: a field
    `X | None = None` is an X that may be left out, one `X | None` without a default an X that may be null; a
    `const` is a one-value `enum`, a tuple an array of its item type, an
    exclusive bound 3.0's limit and flag; `propertyNames` (no 3.0 keyword) is left out."""
    if isinstance(node, list):
        return [_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi_30(value) for key, value in node.items() if key != "propertyNames"}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(node.get(bound, True), bool):  # 3.1's number is 3.0's limit with a true flag
            node[limit], node[bound] = node[bound], True
    if "prefixItems" in node:  # a tuple: 3.0 knows arrays of one item type
        items = node.pop("prefixItems")
        assert isinstance(items, list)
        node["items"] = items[0] if all(item == items[0] for item in items) else {}
    kinds = node.get("anyOf")
    if not isinstance(kinds, list) or _NULL not in kinds:
        return node
    rest = [kind for kind in kinds if kind != _NULL]
    others = {key: value for key, value in node.items() if key != "anyOf"}
    optional = "default" in others and others.pop("default") is None
    nullable = {} if optional else {"nullable": True}
    if len(rest) == 1 and isinstance(rest[0], dict) and "$ref" not in rest[0]:
        return {**rest[0], **others, **nullable}
    return {**others, "anyOf": rest, **nullable}


def _components() -> dict:
    _, definitions = models_json_schema(
        [(model, "validation") for model in COMPONENTS], ref_template=_PREFIX + "{model}"
    )
    return _openapi_30(definitions["$defs"])  # type: ignore[return-value]


SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "Kakehashi",
        "version": __version__,
        "description": "Model serving for ONNX vision models: KServe Open Inference Protocol v2 and an "
        "Ultralytics-style image predict endpoint.",
    },
    "paths": _with_common_errors(_paths()),
    "components": {"schemas": _components()},
}
