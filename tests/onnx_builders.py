"""Small ONNX graphs the tests build themselves, with outputs known exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def constant_model(path: Path, outputs: dict[str, np.ndarray], *, input_name: str = "images",
                   input_shape: list = ("batch", 3, "height", "width"), input_type: int = TensorProto.FLOAT,
                   metadata: dict[str, str] | None = None) -> Path:
    """A model whose every output is a constant (shape [1, ...]) repeated over the input's batch."""
    nodes = [
        helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
    ]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for index, (name, value) in enumerate(outputs.items()):
        value = np.asarray(value, np.float32)
        rank = value.ndim
        initializers += [
            numpy_helper.from_array(value, f"const{index}"),
            numpy_helper.from_array(np.asarray([-1] + [1] * (rank - 1), np.int64), f"shape{index}"),
        ]
        nodes += [
            helper.make_node("Reshape", ["zeros", f"shape{index}"], [f"batch_zeros{index}"]),
            helper.make_node("Add", [f"batch_zeros{index}", f"const{index}"], [name]),
        ]
        dims = ["batch", *value.shape[1:]]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info(input_name, input_type, list(input_shape))],
                              graph_outputs, initializers)
    return _save(graph, path, metadata)


IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


# one sample array per OIP datatype (with each type's extremes) for `identity_model`
SAMPLE_TENSORS = {
    "FP32": np.array([[1.5, -2.25], [3.0e10, 0.0]], np.float32),
    "FP16": np.array([[0.5, -2.0], [1024.0, 0.125]], np.float16),
    "UINT8": np.array([[0, 255], [7, 8]], np.uint8),
    "INT32": np.array([[-2**31, 2**31 - 1], [0, 1]], np.int32),
    "INT64": np.array([[-2**63, 2**63 - 1], [0, 1]], np.int64),
    "BOOL": np.array([[True, False], [False, True]]),
    "BYTES": np.array([[b"h\xc3\xa9llo", b""], [b"a b", b"{json}"]], dtype=object),
    "FP64": np.array([[1.0e-300, 2.5], [-1.0, 1.0e300]], np.float64),
    "INT8": np.array([[-128, 127], [0, 1]], np.int8),
    "INT16": np.array([[-32768, 32767], [0, 1]], np.int16),
    "UINT16": np.array([[0, 65535], [1, 2]], np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 2]], np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [1, 2]], np.uint64),
}


def identity_model(path: Path, datatypes: Iterable[str] = tuple(IDENTITY_TYPES)) -> Path:
    """One input `in_<DT>` → output `out_<DT>` (Identity) for each OIP datatype (default: all), shape [-1, -1]."""
    nodes, inputs, outputs = [], [], []
    for datatype in datatypes:
        onnx_type = IDENTITY_TYPES[datatype]
        nodes.append(helper.make_node("Identity", [f"in_{datatype}"], [f"out_{datatype}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{datatype}", onnx_type, ["a", "b"]))
        outputs.append(helper.make_tensor_value_info(f"out_{datatype}", onnx_type, ["a", "b"]))
    return _save(helper.make_graph(nodes, "identity", inputs, outputs), path, None)


def tiny_model(path: Path) -> Path:
    """`x` FP32 [batch, 3, 64, 64] → `y` = 2x + 1 (same shape): a tiny model for raw-tensor tests."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["twice"]), helper.make_node("Add", ["twice", "one"], ["y"])]
    initializers = [numpy_helper.from_array(np.float32(2.0).reshape(()), "two"),
                    numpy_helper.from_array(np.float32(1.0).reshape(()), "one")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 64, 64])], initializers)
    return _save(graph, path, None)


def lookup_model(path: Path, table: np.ndarray) -> Path:
    """`index` INT64 [batch, 1] → `value` FP32 [batch, 1] = table[index]; an index outside the table makes
    ONNX Runtime fail the whole run (a request that breaks its batch)."""
    nodes = [helper.make_node("Gather", ["table", "index"], ["gathered"], axis=0),
             helper.make_node("Identity", ["gathered"], ["value"])]
    graph = helper.make_graph(
        nodes, "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(table.astype(np.float32), "table")])
    return _save(graph, path, None)


def half_precision(source: Path, target: Path, keep_io_types: bool = False) -> Path:
    """An FP16 copy of the FP32 model at `source` (inputs and outputs FP16 too unless `keep_io_types`)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types), str(target))
    return target
