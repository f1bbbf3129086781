"""The OpenAPI document for the HTTP API, and the `/docs` page (Swagger UI shipped offline)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from kakehashi import __version__
from kakehashi.server.responses import JSONBytes

STATIC = Path(str(resources.files("kakehashi.server") / "static"))

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema_ref: str, description: str = "OK") -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_PREDICT_PARAMS = [
    _query("conf", {"type": "number", "minimum": 0, "maximum": 1}, "Confidence threshold (model default 0.25)."),
    _query("iou", {"type": "number", "minimum": 0, "maximum": 1}, "NMS IoU threshold (model default 0.7)."),
    _query("imgsz", {"type": "string"}, "Input size, `640` or `height,width` (dynamic-shape models only)."),
    _query("max_det", {"type": "integer", "minimum": 1, "maximum": 10000}, "Most detections per image."),
    _query("classes", {"type": "string"}, "Only these class indices, e.g. `0,2`."),
    _query("decimals", {"type": "integer", "minimum": 0, "maximum": 10}, "Decimal places in the answer (5)."),
    _query("top_k", {"type": "integer", "minimum": 1, "maximum": 1000}, "Classes per image (classification)."),
    _query("timeout", {"type": "number", "minimum": 1}, "Deadline in milliseconds (504 past it)."),
]

_PREDICT = {
    "post": {
        "summary": "Detect objects (or classify) in one or more images",
        "parameters": [_MODEL, *_PREDICT_PARAMS],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": _json("Predictions"),
            "400": _ERROR,
            "404": _ERROR,
            "413": _ERROR,
            "415": _ERROR,
            "429": _ERROR,
            "503": _ERROR,
            "504": _ERROR,
        },
    }
}


def _model_paths(prefix: str, extra: list[dict]) -> dict:
    params = [_MODEL, *extra]
    return {
        prefix: {
            "get": {
                "summary": "Model metadata",
                "parameters": params,
                "responses": {"200": _json("ModelMetadata"), "404": _ERROR, "503": _ERROR},
            }
        },
        prefix + "/ready": {
            "get": {
                "summary": "Model readiness",
                "parameters": params,
                "responses": {"200": {"description": "Ready"}, "404": _ERROR, "503": _ERROR},
            }
        },
        prefix + "/config": {
            "get": {
                "summary": "Triton model configuration",
                "parameters": params,
                "responses": {"200": {"description": "OK"}, "404": _ERROR, "503": _ERROR},
            }
        },
        prefix + "/stats": {
            "get": {
                "summary": "Triton statistics for the model",
                "parameters": params,
                "responses": {"200": {"description": "OK"}, "404": _ERROR},
            }
        },
        prefix + "/infer": {
            "post": {
                "summary": "Infer with Open Inference Protocol v2 JSON tensors",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "description": "JSON tensors, or the binary tensor data extension: a JSON header of "
                    "Inference-Header-Content-Length bytes, then the raw tensors.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": _json("InferResponse"),
                    "400": _ERROR,
                    "404": _ERROR,
                    "413": _ERROR,
                    "415": _ERROR,
                    "429": _ERROR,
                    "503": _ERROR,
                    "504": _ERROR,
                },
            }
        },
    }


_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
}

_SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Tensor"}},
            "outputs": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            },
        },
    },
    "Tensor": _TENSOR,
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
        },
    },
    "Box": {"type": "object", "properties": {k: {"type": "number"} for k in ("x1", "y1", "x2", "y2")}},
    "Result": {
        "type": "object",
        "required": ["class", "name", "confidence"],
        "properties": {
            "class": {"type": "integer"},
            "name": {"type": "string"},
            "confidence": {"type": "number"},
            "box": {"$ref": "#/components/schemas/Box"},
        },
    },
    "Predictions": {
        "type": "object",
        "required": ["images", "metadata"],
        "properties": {
            "images": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
                        "speed": {"type": "object", "additionalProperties": {"type": "number"}},
                    },
                },
            },
            "metadata": {
                "type": "object",
                "properties": {
                    "model": {"type": "string"},
                    "version": {"type": "string"},
                    "imageCount": {"type": "integer"},
                },
            },
        },
    },
}

_OPEN = ("/v2/health/live", "/v2/health/ready")
_COMMON = {
    "401": {"description": "No valid API key (only when keys are configured)", "content": _ERROR["content"]},
    "431": {"description": "Request line and headers over the limit", "content": _ERROR["content"]},
    "503": {"description": "Not ready, or the server is shutting down", "content": _ERROR["content"]},
}


def _with_common_errors(paths: dict) -> dict:
    """Every operation may answer 431 and 503 (draining); all but health checks 401; those naming a model,
    400 (a name or version that is not a plain identifier)."""
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            for status, response in _COMMON.items():
                if status != "401" or path not in _OPEN:
                    responses.setdefault(status, response)
            if "{" in path:
                responses.setdefault("400", _ERROR)
    return paths


SPEC = {
    "openapi": "3.0.3",
    "info": {
        "title": "Kakehashi",
        "version": __version__,
        "description": "Model serving for ONNX vision models: KServe Open Inference Protocol v2 and an "
        "Ultralytics-style image predict endpoint.",
    },
    "paths": _with_common_errors(
        {
            "/v2/health/live": {"get": {"summary": "Server liveness", "responses": {"200": {"description": "Live"}}}},
            "/v2/health/ready": {
                "get": {
                    "summary": "Server readiness (a model READY, and every expected one)",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
            "/v2": {"get": {"summary": "Server metadata", "responses": {"200": {"description": "OK"}}}},
            **_model_paths("/v2/models/{model}", []),
            **_model_paths("/v2/models/{model}/versions/{version}", [_VERSION]),
            "/v2/models/stats": {
                "get": {"summary": "Triton statistics for every model", "responses": {"200": {"description": "OK"}}}
            },
            "/v2/repository/index": {
                "post": {
                    "summary": "Every model and version with its state",
                    "responses": {"200": {"description": "OK"}, "400": _ERROR},
                }
            },
            "/v2/repository/models/{model}/load": {
                "post": {
                    "summary": "Load or reload a model from disk (no dropped requests; needs --model-control "
                    "explicit or poll, and an admin key when keys are on)",
                    "parameters": [_MODEL],
                    "responses": {"200": {"description": "Loaded"}, "400": _ERROR, "403": _ERROR, "404": _ERROR},
                }
            },
            "/v2/repository/models/{model}/unload": {
                "post": {
                    "summary": "Stop serving a model (needs --model-control explicit or poll, and an admin key when "
                    "keys are on)",
                    "parameters": [_MODEL],
                    "responses": {"200": {"description": "Unloaded"}, "403": _ERROR, "404": _ERROR},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OK"}}}},
            "/v1/models/{model}/predict": _PREDICT,
            "/v1/models/{model}/versions/{version}/predict": {
                "post": {**_PREDICT["post"], "parameters": [_MODEL, _VERSION, *_PREDICT_PARAMS]}
            },
        }
    ),
    "components": {"schemas": _SCHEMAS},
}


async def openapi_json(request: Request) -> Response:
    return JSONBytes(SPEC)


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
