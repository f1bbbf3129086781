"""What the load generator sends, and how it checks each answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from kakehashi.protocols.oip_binary import tensor_to_bytes
from kakehashi.tasks.images import IMAGE_TYPES

Check = Callable[[int, Mapping[str, str], bytes], str | None]  # (status, headers, body) → None if right, else what


@dataclass(frozen=True)
class Payload:
    """One kind of request: path, body, headers, and the check every answer must pass."""

    path: str
    bodies: list[bytes]
    headers: dict[str, str]
    check: Check
    description: str


def _check_predict(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}"
    try:
        answer = orjson.loads(body)
        images = answer["images"]
        if len(images) != 1 or not isinstance(images[0]["results"], list) or len(images[0]["shape"]) != 2:
            return "bad answer shape"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "bad answer"
    return None


def predict_payload(model: str, images: list[Path], query: str = "") -> Payload:
    """Raw image bodies for `POST /v1/models/{model}/predict`, cycling through `images`."""
    if not images:
        raise ValueError("no images to send")
    kinds = {IMAGE_TYPES.get(p.suffix.lower(), "application/octet-stream") for p in images}
    path = f"/v1/models/{model}/predict" + (f"?{query}" if query else "")
    headers = {"content-type": kinds.pop() if len(kinds) == 1 else "application/octet-stream"}
    return Payload(
        path, [p.read_bytes() for p in images], headers, _check_predict, f"predict {model}: {len(images)} image(s)"
    )


_NUMPY = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


INFER_ENCODINGS = ("json", "binary", "grpc")


def _random_inputs(inputs: list[dict], shapes: dict[str, list[int]], seed: int) -> dict[str, tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, tuple[str, np.ndarray]] = {}
    for spec in inputs:
        shape = shapes.get(spec["name"]) or [1 if d == -1 else d for d in spec["shape"]]
        if any(d < 0 for d in shape):
            raise ValueError(f"input {spec['name']} has dynamic dimensions {spec['shape']}; give --shape")
        arrays[spec["name"]] = spec["datatype"], (rng.random(shape) * 255).astype(_NUMPY[spec["datatype"]])
    return arrays


def infer_payload(
    model: str,
    inputs: list[dict],
    shapes: dict[str, list[int]],
    outputs: list[dict],
    encoding: str = "json",
    seed: int = 0,
) -> Payload:
    """An OIP v2 infer request with random data for every input (shapes fill dynamic dimensions), as JSON,
    with the HTTP binary tensor extension, or as a gRPC `ModelInferRequest`; answers are checked for the
    model's outputs."""
    arrays = _random_inputs(inputs, shapes, seed)
    expected = {o["name"] for o in outputs}
    if encoding == "grpc":
        return _grpc_payload(model, arrays, expected)
    binary = encoding == "binary"
    tensors = []
    for name, (datatype, array) in arrays.items():
        tensor: dict[str, object] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            tensor["parameters"] = {"binary_data_size": array.nbytes}
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    request: dict = {"inputs": tensors}
    if binary:
        request["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(request)
    body = header + b"".join(tensor_to_bytes(array) for _, array in arrays.values()) if binary else header
    headers = {"content-type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers["inference-header-content-length"] = str(len(header))

    def check(status: int, answer_headers: Mapping[str, str], answer: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        try:
            length = int(answer_headers.get("inference-header-content-length", len(answer)))
            got = {o["name"]: o for o in orjson.loads(answer[:length])["outputs"]}
            if set(got) != expected:
                return "wrong outputs"
            sizes = [o.get("parameters", {}).get("binary_data_size") for o in got.values()]
            if binary and sum(sizes) != len(answer) - length:
                return "binary outputs do not add up"
            if not binary and any(len(o["data"]) != int(np.prod(o["shape"])) for o in got.values()):
                return "data does not match shape"
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return "bad answer"
        return None

    return Payload(f"/v2/models/{model}/infer", [body], headers, check, f"infer {model} ({encoding})")


def _grpc_payload(model: str, arrays: dict[str, tuple[str, np.ndarray]], expected: set[str]) -> Payload:
    from kakehashi.protocols.oip_grpc import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=array.shape)
            for name, (datatype, array) in arrays.items()
        ],
        raw_input_contents=[tensor_to_bytes(array) for _, array in arrays.values()],
    )

    def check(status: int, headers: Mapping[str, str], answer: bytes) -> str | None:
        response = pb.ModelInferResponse.FromString(answer)
        if {o.name for o in response.outputs} != expected or len(response.raw_output_contents) != len(expected):
            return "wrong outputs"
        return None

    return Payload(
        "/inference.GRPCInferenceService/ModelInfer", [request.SerializeToString()], {}, check, f"infer {model} (gRPC)"
    )
