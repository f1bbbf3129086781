"""Open Inference Protocol v2 gRPC tensors: `ModelInferRequest` to numpy arrays, outputs back to messages.

Inputs come as typed `contents` or, as tritonclient sends them, as `raw_input_contents` (the same bytes as the
HTTP binary extension); outputs always go back as `raw_output_contents`, as Triton answers.
"""

from __future__ import annotations

import math

import numpy as np

from kakehashi.datatypes import OIP_TO_NUMPY, oip_datatype
from kakehashi.errors import InvalidInput
from kakehashi.protocols.oip_binary import tensor_from_bytes, tensor_to_bytes
from kakehashi.protocols.oip_grpc import grpc_service_pb2 as pb
from kakehashi.protocols.oip_json import InferRequest
from kakehashi.protocols.tensor_shape import checked_shape

# the typed `InferTensorContents` field that carries each datatype (FP16 has none: it must come raw)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# the protobuf element type of each field: values are read as it, then range-checked into the datatype
FIELD_DTYPE = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def parameter_values(parameters) -> dict:
    """A protobuf `map<string, InferParameter>` as plain Python values."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice"))
        for key, value in parameters.items()
        if value.WhichOneof("parameter_choice")
    }


def _typed(name: str, datatype: str, shape: tuple[int, ...], contents) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise InvalidInput(f"input '{name}': shape {list(shape)} needs {expected} elements, {field} has {len(values)}")
    dtype = OIP_TO_NUMPY[datatype]
    if datatype == "BYTES":
        array = np.empty(expected, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide: np.ndarray = np.fromiter(values, dtype=FIELD_DTYPE[field], count=expected)
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInput(f"input '{name}': a value in {field} is out of range for {datatype}")
    return wide.astype(dtype, copy=False).reshape(shape)


def parse_grpc_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """The inputs, requested outputs and parameters of a gRPC infer request; problems are `InvalidInput`."""
    if not request.inputs:
        raise InvalidInput("the request needs at least one input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send every input raw or none"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        if datatype not in OIP_TO_NUMPY:
            raise InvalidInput(
                f"input '{name}': unknown datatype {datatype!r}; expected one of {', '.join(OIP_TO_NUMPY)}"
            )
        shape = checked_shape(name, tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"input '{name}' has both contents and raw_input_contents")
            inputs[name] = tensor_from_bytes(name, datatype, shape, memoryview(raw[index]))
        else:
            inputs[name] = _typed(name, datatype, shape, tensor.contents)
    outputs = [output.name for output in request.outputs] or None
    return InferRequest(inputs, outputs, request.id or None, parameter_values(request.parameters))


def encode_grpc_infer_response(
    model: str, version: int, outputs: dict[str, np.ndarray], request_id: str | None
) -> pb.ModelInferResponse:
    """The response message, every output as raw little-endian bytes."""
    return pb.ModelInferResponse(
        model_name=model,
        model_version=str(version),
        id=request_id or "",
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name=name, datatype=oip_datatype(array.dtype), shape=array.shape)
            for name, array in outputs.items()
        ],
        raw_output_contents=[tensor_to_bytes(array) for array in outputs.values()],
    )
