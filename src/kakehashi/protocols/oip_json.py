"""Open Inference Protocol v2 JSON tensors: request bodies to numpy arrays, outputs back to JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import orjson

from kakehashi.datatypes import OIP_TO_NUMPY, oip_datatype
from kakehashi.errors import InvalidInput
from kakehashi.protocols.oip_binary import split_body, tensor_from_bytes, tensor_to_bytes
from kakehashi.protocols.tensor_shape import checked_shape

# JSON value kinds each datatype accepts (numpy kind of the parsed data): no silent float→int or int→bool
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


@dataclass
class InferRequest:
    """A parsed infer request: input arrays by name and the outputs asked for (None = all)."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    id: str | None = None
    parameters: dict = field(default_factory=dict)
    binary_outputs: set[str] = field(default_factory=set)
    all_outputs_binary: bool = False

    def wants_binary(self, output: str) -> bool:
        return self.all_outputs_binary or output in self.binary_outputs

    @property
    def timeout_ms(self) -> float | None:
        """The request's `timeout` parameter, in microseconds as Triton and tritonclient send it."""
        timeout = self.parameters.get("timeout")
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInput(f"parameter 'timeout' must be a positive number of microseconds, got {timeout!r}")
        return timeout / 1000


def _loads(body: bytes) -> dict:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidInput("the request body must be a JSON object with an 'inputs' list")
    return request


def _shape(name: str, raw: object) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers, got {raw!r}")
    return checked_shape(name, raw)


def _whole(data: list, parsed: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`data` as integers if none has a fraction; else `parsed` unchanged (rejected by the kind check)."""
    try:
        exact = np.asarray(data, dtype=dtype)
    except (ValueError, OverflowError):
        return parsed
    return exact if np.array_equal(exact.astype(np.float64), parsed) else parsed


def decode_tensor(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) as an array of `datatype` and `shape`."""
    expected = math.prod(shape)
    dtype = OIP_TO_NUMPY[datatype]
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1)
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"input '{name}': BYTES data must be strings")
        array = np.array([v.encode() for v in flat], dtype=object)
    else:
        try:
            parsed = np.asarray(data)
            if parsed.dtype.kind == "f" and dtype.kind in "iu":  # integers past int64 (2**63 in UINT64) parse as float
                parsed = _whole(data, parsed, dtype)
        except (ValueError, OverflowError):
            raise InvalidInput(f"input '{name}': 'data' is not a regular array of numbers") from None
        if parsed.size and parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
            raise InvalidInput(
                f"input '{name}': 'data' holds values that are not {datatype} "
                f"(e.g. fractions for an integer type, numbers for BOOL, or strings)"
            )
        if dtype.kind in "iuf" and parsed.size:  # past a float type's range a value would become infinite
            info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
            if parsed.min() < info.min or parsed.max() > info.max:
                raise InvalidInput(f"input '{name}': a value is out of range for {datatype}")
        array = parsed.astype(dtype)
    if array.size != expected:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {expected} elements, 'data' has {array.size}")
    return array.reshape(shape)


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an OIP v2 infer request (JSON, or JSON header + binary tensors when `header_length` is given);
    every problem is an `InvalidInput` naming the input."""
    binary = memoryview(b"")
    if header_length is not None:
        body, binary = split_body(body, header_length)
    request = _loads(body)
    offset = 0
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput("each input must be an object with a string 'name'")
        name = raw["name"]
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        datatype = raw.get("datatype")
        if datatype not in OIP_TO_NUMPY:
            raise InvalidInput(
                f"input '{name}': unknown datatype {datatype!r}; expected one of {', '.join(OIP_TO_NUMPY)}"
            )
        size = (raw.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input '{name}': binary_data_size {size!r} does not fit the {len(binary)} "
                    f"binary bytes after the JSON header"
                )
            inputs[name] = tensor_from_bytes(
                name, datatype, _shape(name, raw.get("shape")), binary[offset : offset + size]
            )
            offset += size
            continue
        if "data" not in raw:
            raise InvalidInput(f"input '{name}' has no 'data'")
        inputs[name] = decode_tensor(name, datatype, _shape(name, raw.get("shape")), raw["data"])
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes after the JSON header belong to no input")
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise InvalidInput("'outputs' must be a list of objects with a string 'name'")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    everything_binary = parameters.get("binary_data_output") is True
    binary_outputs = {o["name"] for o in outputs or [] if (o.get("parameters") or {}).get("binary_data") is True}
    if outputs is not None:
        outputs = [o["name"] for o in outputs]
    request_id = request.get("id")
    return InferRequest(
        inputs,
        outputs,
        request_id if isinstance(request_id, str) else None,
        parameters,
        binary_outputs,
        everything_binary,
    )


def _json_data(array: np.ndarray) -> object:
    flat = array.reshape(-1)
    if flat.dtype.kind in "SO":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat


def encode_infer_response(
    model: str, version: int, outputs: dict[str, np.ndarray], request: InferRequest
) -> tuple[bytes, int | None]:
    """The OIP v2 response: JSON, or a JSON header + raw tensors for outputs asked for as binary.

    Returns the body and, when it has a binary part, the JSON header's length.
    """
    response: dict = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        response["id"] = request.id
    encoded: list[dict] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        entry: dict[str, object] = {"name": name, "datatype": oip_datatype(array.dtype), "shape": list(array.shape)}
        if request.wants_binary(name):
            blobs.append(tensor_to_bytes(array))
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = _json_data(array)
        encoded.append(entry)
    response["outputs"] = encoded
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)
