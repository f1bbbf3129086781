"""OpenVINO backend (the `openvino` package, CPU plugin): one compiled model, several infer requests.

The compiled model runs with OpenVINO's performance hint (`latency` or `throughput`) and the precision asked for,
FP32 by default: on CPUs with bf16 support OpenVINO would otherwise compute in bf16, which is faster but answers
differently (boxes moved by a pixel or more, detections near the threshold lost), so the load decides whether the
model's own answers allow it (`precision: auto`). `precisions()` says what this CPU computes in.
`run` is thread-safe: each call takes an idle infer request, so the batcher's instances map onto them.

A failed inference leaves OpenVINO's CPU plugin unable to run the shapes of the last successful one (every later
inference with them fails, on any infer request, until one of other shapes succeeds), so after a failure one
inference of zeros at other valid shapes is run to put the compiled model back in order.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import queue
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.backends.registry import Runtime, RuntimeOptions, register
from kakehashi.errors import ModelLoadError, runtime_message

log = logging.getLogger(__name__)

_OV_TO_OIP = {
    "boolean": "BOOL",
    "u8": "UINT8",
    "u16": "UINT16",
    "u32": "UINT32",
    "u64": "UINT64",
    "i8": "INT8",
    "i16": "INT16",
    "i32": "INT32",
    "i64": "INT64",
    "f16": "FP16",
    "f32": "FP32",
    "f64": "FP64",
}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
# the CPU plugin's optimization capabilities that mean it computes in that precision
_CAPABILITIES = {"BF16": "bf16", "FP16": "f16"}


def _spec(port, path: Path) -> TensorSpec:
    datatype = _OV_TO_OIP.get(port.get_element_type().get_type_name())
    if datatype is None:
        raise ModelLoadError(
            f"{path}: tensor '{port.get_any_name()}' has type {port.get_element_type()}, which "
            f"OpenVINO cannot serve here (use backend: onnxruntime)"
        )
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), datatype, shape)


@contextlib.contextmanager
def _cache_lock(core, folder: Path) -> Iterator[None]:
    """Keep compiled models in `folder`, one process at a time compiling into it or importing from it: OpenVINO
    writes a compiled model in place and maps the file to import it, so a process importing while another writes
    the same file dies of SIGBUS (seen with a server's measuring child and another load starting together). Where
    the folder cannot be used or locked (a read-only home, a file system without locks), the model is compiled
    every time."""
    with contextlib.ExitStack() as held:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = held.enter_context(open(folder / ".lock", "a"))  # closing it releases the lock
            fcntl.flock(lock, fcntl.LOCK_EX)
            core.set_property({"CACHE_DIR": str(folder)})
        except Exception as exc:  # OSError, or OpenVINO refusing the folder
            held.close()
            log.warning("OpenVINO keeps no compiled models in %s: %s", folder, runtime_message(exc))
        yield


class OpenVinoBackend:
    """Runs an ONNX model with OpenVINO on the CPU, `requests` inferences at a time."""

    platform = "openvino"

    def __init__(
        self,
        path: Path,
        hint: str = "latency",
        requests: int = 1,
        threads: int = 0,
        precision: str = "f32",
        cache_folder: Path | None = None,
    ) -> None:
        """`cache_folder`: where OpenVINO keeps compiled models, so a later load of the same file and settings
        imports instead of compiling (a fifth of the time for YOLO11n)."""
        try:
            from kakehashi.backends.openvino_import import ov
        except ImportError:
            raise ModelLoadError("backend openvino needs the openvino package: pip install openvino") from None
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ModelLoadError(f"{path}: cannot be loaded by OpenVINO: {runtime_message(exc)}") from None
        self.inputs = [_spec(port, path) for port in model.inputs]
        self.outputs = [_spec(port, path) for port in model.outputs]
        self.metadata = _metadata(model)
        config = {"PERFORMANCE_HINT": HINTS[hint], "INFERENCE_PRECISION_HINT": precision}
        if hint == "throughput":
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(requests)
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        lock = _cache_lock(core, cache_folder / "openvino") if cache_folder is not None else contextlib.nullcontext()
        try:  # compiled from the file, which OpenVINO's cache recognises (not from the model read above)
            with lock:
                compiled = core.compile_model(str(path), "CPU", config)
        except Exception as exc:
            raise ModelLoadError(f"{path}: OpenVINO cannot compile this model: {runtime_message(exc)}") from None
        self._compiled = compiled
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(requests):
            self._idle.put(compiled.create_infer_request())
        self.requests = requests
        self.concurrent_runs = requests  # its infer requests (the batcher's instances map onto them)
        self.solo = False
        computes_in = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16 or f16
        if computes_in != precision:
            raise ModelLoadError(f"{path}: OpenVINO computes in {computes_in} on this CPU, not {precision}")
        self.providers = [f"CPU ({hint}, {precision})"]
        self._outputs = [(port, spec.name) for port, spec in zip(compiled.outputs, self.outputs)]
        self._last_good: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference on an idle infer request; every output by name (copied out of OpenVINO's buffers)."""
        request = self._idle.get()
        try:
            request.infer({name: np.ascontiguousarray(array) for name, array in feeds.items()})
            outputs = {name: request.get_tensor(port).data.copy() for port, name in self._outputs}
        except Exception:
            self._recover(request)
            raise
        else:
            self._last_good = {name: (array.shape, array.dtype) for name, array in feeds.items()}
            return outputs
        finally:
            self._idle.put(request)

    def release_memory(self, one_row: dict[str, np.ndarray] | None) -> None:
        """Shrink each infer request's tensors to a batch of one (a run of `one_row`), then free the compiled
        model's intermediate buffers (allocated again at the next inference), holding every infer request: this
        must not run while one infers."""
        held = [self._idle.get() for _ in range(self.requests)]
        try:
            if one_row is not None:
                for request in held:
                    request.infer(one_row)
            self._compiled.release_memory()
        finally:
            for request in held:
                self._idle.put(request)

    def _recover(self, request) -> None:
        """After a failed inference, run zeros shaped like the last successful feeds with the first dynamic
        dimension changed (one more row for the batch dimension, doubled otherwise), so the shapes that worked
        work again."""
        if not self._last_good:
            return
        dynamic = [i for i, d in enumerate(self.inputs[0].shape) if d == -1]
        if not dynamic:
            return  # fixed shapes: a failed inference cannot have changed them
        axis = dynamic[0]
        feeds = {}
        for spec in self.inputs:
            shape, dtype = self._last_good[spec.name]
            if axis < len(spec.shape) and spec.shape[axis] == -1:
                shape = (*shape[:axis], shape[axis] + 1 if axis == 0 else shape[axis] * 2, *shape[axis + 1 :])
            feeds[spec.name] = np.zeros(shape, dtype)
        try:
            request.infer(feeds)
        except Exception as exc:
            log.warning(
                "OpenVINO could not recover from a failed inference (%s); requests with the shapes of "
                "the last successful one may fail until others succeed",
                runtime_message(exc),
            )


def _metadata(model) -> dict[str, str]:
    """The ONNX file's metadata_props, which OpenVINO keeps under the model's `framework` runtime info."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    return {key: model.get_rt_info(["framework", key]).astype(str) for key in info["framework"]}


def _create(path: Path, options: RuntimeOptions) -> list[Backend]:
    """One compiled model with an infer request per instance (the same object once per instance)."""
    instances = options.instances or 1
    backend = OpenVinoBackend(
        path, options.performance_hint, instances, options.threads, options.precision, options.cache_folder
    )
    return [backend] * instances


def _installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@cache
def _precisions() -> tuple[str, ...]:
    """f32, and bf16 / f16 where the CPU plugin says this CPU computes in them."""
    from kakehashi.backends.openvino_import import ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ("f32", *(name for capability, name in _CAPABILITIES.items() if capability in capabilities))


register(Runtime("openvino", OpenVinoBackend.platform, _create, _installed, _precisions))
