"""Build `1/model.onnx`: a "redness" map, a model whose output layout Kakehashi does not know.

Input `image` [batch, 3, 256, 256] (RGB in 0..1); output `heat` [batch, 1, 64, 64]: for each 4x4 cell, the mean of
red minus the mean of green and blue. Run: `python make_model.py` (needs the `onnx` package)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

weights = np.array([[[[1.0]], [[-0.5]], [[-0.5]]]], np.float32)  # [1 out, 3 in, 1, 1]: red - (green + blue) / 2
graph = helper.make_graph(
    [
        helper.make_node("Conv", ["image", "weights"], ["redness"]),
        helper.make_node("AveragePool", ["redness"], ["heat"], kernel_shape=[4, 4], strides=[4, 4]),
    ],
    "redness",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 256, 256])],
    [helper.make_tensor_value_info("heat", TensorProto.FLOAT, ["batch", 1, 64, 64])],
    [numpy_helper.from_array(weights, "weights")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
target = Path(__file__).parent / "1" / "model.onnx"
target.parent.mkdir(exist_ok=True)
onnx.save(model, str(target))
print(f"wrote {target}")
