"""Small ONNX graphs the tests build themselves, with outputs known exactly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

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


def constant_model(
    path: Path,
    outputs: dict[str, np.ndarray],
    *,
    input_name: str = "images",
    input_shape: list = ("batch", 3, "height", "width"),
    input_type: int = TensorProto.FLOAT,
    metadata: dict[str, str] | None = None,
) -> Path:
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
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info(input_name, input_type, list(input_shape))],
        graph_outputs,
        initializers,
    )
    return _save(graph, path, metadata)


IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


# one sample array per OIP datatype (with each type's extremes) for `identity_model`
SAMPLE_TENSORS = {
    "FP32": np.array([[1.5, -2.25], [3.0e10, 0.0]], np.float32),
    "FP16": np.array([[0.5, -2.0], [1024.0, 0.125]], np.float16),
    "UINT8": np.array([[0, 255], [7, 8]], np.uint8),
    "INT32": np.array([[-(2**31), 2**31 - 1], [0, 1]], np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, 1]], np.int64),
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
    initializers = [
        numpy_helper.from_array(np.float32(2.0).reshape(()), "two"),
        numpy_helper.from_array(np.float32(1.0).reshape(()), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        initializers,
    )
    return _save(graph, path, None)


def lookup_model(path: Path, table: np.ndarray) -> Path:
    """`index` INT64 [batch, 1] → `value` FP32 [batch, 1] = table[index]; an index outside the table makes
    ONNX Runtime fail the whole run (a request that breaks its batch)."""
    nodes = [
        helper.make_node("Gather", ["table", "index"], ["gathered"], axis=0),
        helper.make_node("Identity", ["gathered"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(table.astype(np.float32), "table")],
    )
    return _save(graph, path, None)


def half_precision(source: Path, target: Path, keep_io_types: bool = False) -> Path:
    """An FP16 copy of the FP32 model at `source` (inputs and outputs FP16 too unless `keep_io_types`)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types), str(target))
    return target


def size_probe_model(path: Path, box: tuple[float, float, float, float] = (0, 0, 320, 320)) -> Path:
    """An end-to-end detector ([batch, 1, 6] rows x1, y1, x2, y2, score, class) that proves the input size it
    ran at: one box at the fixed input pixels `box`, class 0, with score = input width / 1000. At imgsz 320 a
    640x640 image gives confidence 0.32 and the box (0, 0, 640, 640) in its pixels; at 640, 0.64 and (0, 0,
    320, 320)."""
    nodes = [
        helper.make_node("Cast", ["images"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Reshape", ["zeros", "batch_shape"], ["batch_zeros"]),  # [batch, 1, 1]
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Gather", ["shape", "width_index"], ["width"], axis=0),
        helper.make_node("Cast", ["width"], ["width_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["width_float", "thousand"], ["score"]),
        helper.make_node("Mul", ["score", "score_slot"], ["score_row"]),  # [1, 1, 6]: the score in column 4
        helper.make_node("Add", ["score_row", "row"], ["full_row"]),
        helper.make_node("Add", ["batch_zeros", "full_row"], ["output0"]),
    ]
    initializers = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(np.asarray([-1, 1, 1], np.int64), "batch_shape"),
        numpy_helper.from_array(np.asarray([3], np.int64), "width_index"),
        numpy_helper.from_array(np.asarray([1000], np.float32), "thousand"),
        numpy_helper.from_array(np.asarray([[[0, 0, 0, 0, 1, 0]]], np.float32), "score_slot"),
        numpy_helper.from_array(np.asarray([[[*box, 0, 0]]], np.float32), "row"),
    ]
    graph = helper.make_graph(
        nodes,
        "size_probe",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 1, 6])],
        initializers,
    )
    return _save(graph, path, {"end2end": "True", "names": "{0: 'probe'}", "stride": "32", "task": "detect"})


def colour_classifier(path: Path, order: tuple[int, int, int] = (0, 1, 2)) -> Path:
    """A classifier of an image's dominant colour: softmax over 20 × the mean of each channel; class k is
    channel `order[k]` (names red, green, blue in that order), so a clearly tinted image has a clear top-1."""
    weights = np.zeros((3, 3), np.float32)
    for cls, channel in enumerate(order):
        weights[channel, cls] = 20.0
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["means"], axis=1),
        helper.make_node("MatMul", ["means", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output0"], axis=1),
    ]
    names = "{" + ", ".join(f"{cls}: '{('red', 'green', 'blue')[channel]}'" for cls, channel in enumerate(order)) + "}"
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "weights")],
    )
    return _save(graph, path, {"task": "classify", "names": names, "imgsz": "[64, 64]", "stride": "1"})


def offset_output(source: Path, target: Path, output: str, offset: float) -> Path:
    """A copy of the model at `source` with `offset` added to its output `output` (metadata kept). On a
    random-weight segmentation export, prototypes + 1 make every mask logit the sum of the box's coefficients,
    which is positive there: masks that fill their boxes instead of (correctly) empty ones."""
    model = onnx.load(str(source))
    for node in model.graph.node:
        node.output[:] = [f"{output}_before_offset" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(offset, np.float32), f"{output}_offset"))
    model.graph.node.append(helper.make_node("Add", [f"{output}_before_offset", f"{output}_offset"], [output]))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def rows_of_three_model(path: Path, columns: int) -> Path:
    """`[batch, columns]` reshaped to `[-1, 3]`. With 6 columns each input row gives two output rows (a dynamic
    first output dimension that is not the batch); with 4 every run fails (4 values are not rows of 3)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "rows_of_three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", columns])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 3])],
        [numpy_helper.from_array(np.asarray([-1, 3], np.int64), "shape")],
    )
    return _save(graph, path, None)
