"""OpenVINO backend (the `openvino` package, CPU plugin): one compiled model, several infer requests.

The compiled model runs with OpenVINO's performance hint (`latency` or `throughput`) and FP32 precision by
default: on CPUs with bf16 support OpenVINO would otherwise compute in bf16, which is faster but answers
differently from ONNX Runtime (boxes moved by a pixel or more, detections near the threshold lost); `bf16`
is there for those who measured that it suits their model.
`run` is thread-safe: each call takes an idle infer request, so the batcher's instances map onto them.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import numpy as np

from kakehashi.backends.base import TensorSpec
from kakehashi.errors import ModelLoadError

log = logging.getLogger(__name__)

_OV_TO_OIP = {"boolean": "BOOL", "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64", "i8": "INT8",
              "i16": "INT16", "i32": "INT32", "i64": "INT64", "f16": "FP16", "f32": "FP32", "f64": "FP64"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}


def _spec(port, path: Path) -> TensorSpec:
    datatype = _OV_TO_OIP.get(port.get_element_type().get_type_name())
    if datatype is None:
        raise ModelLoadError(f"{path}: tensor '{port.get_any_name()}' has type {port.get_element_type()}, which "
                             f"OpenVINO cannot serve here (use backend: onnxruntime)")
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), datatype, shape)


class OpenVinoBackend:
    """Runs an ONNX model with OpenVINO on the CPU, `requests` inferences at a time."""

    platform = "openvino"

    def __init__(self, path: Path, hint: str = "latency", requests: int = 1, threads: int = 0,
                 precision: str = "f32") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError("backend openvino needs the openvino package: pip install openvino") from None
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ModelLoadError(f"{path}: cannot be loaded by OpenVINO: {str(exc).splitlines()[0]}") from None
        self.inputs = [_spec(port, path) for port in model.inputs]
        self.outputs = [_spec(port, path) for port in model.outputs]
        self.metadata = _metadata(model)
        config = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
        if hint == "throughput":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(requests)
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelLoadError(f"{path}: OpenVINO cannot compile this model: {str(exc).splitlines()[0]}") from None
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(requests):
            self._idle.put(compiled.create_infer_request())
        self.requests = requests
        self.providers = [f"CPU ({hint}, {precision})"]
        self._outputs = [(port, spec.name) for port, spec in zip(compiled.outputs, self.outputs)]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference on an idle infer request; every output by name (copied out of OpenVINO's buffers)."""
        request = self._idle.get()
        try:
            request.infer({name: np.ascontiguousarray(array) for name, array in feeds.items()})
            return {name: request.get_tensor(port).data.copy() for port, name in self._outputs}
        finally:
            self._idle.put(request)


def _metadata(model) -> dict[str, str]:
    """The ONNX file's metadata_props, which OpenVINO keeps under the model's `framework` runtime info."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in info["framework"]}
