"""ONNX Runtime backend: one `InferenceSession` per loaded model version. `onnxruntime` is imported by the first
session (about 35 MB a process that serves on OpenVINO does without)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.backends.registry import Runtime, RuntimeOptions, register
from kakehashi.errors import InvalidInput, ModelLoadError

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


# sessions at most serving a queue side by side, when the layout is the runtime's to choose (each holds its own
# weights and scratch memory: a third session costs YOLO11n about 25 MB at rest)
QUEUE_SESSIONS = 2

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def provider_name(name: str) -> str:
    """The full ONNX Runtime name of an execution provider given by short or full name."""
    full = PROVIDERS.get(name.lower(), name)
    if full not in PROVIDERS.values() and not full.endswith("ExecutionProvider"):
        raise ValueError(f"an execution provider ({', '.join(PROVIDERS)} or a full ONNX Runtime name)")
    return full


def _spec(node: ort.NodeArg, path: Path) -> TensorSpec:
    datatype = _ORT_TO_OIP.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"{path}: tensor '{node.name}' has type {node.type}, which cannot be served")
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (node.shape or []))
    return TensorSpec(node.name, datatype, shape)


def _as_strings(array: np.ndarray) -> np.ndarray:
    """OIP BYTES (bytes objects) as the str objects ONNX Runtime's string tensors take."""
    try:
        values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput("BYTES input for an ONNX string tensor must be UTF-8 text") from None
    return np.asarray(values, dtype=object).reshape(array.shape)


class OnnxRuntimeBackend:
    """Runs an ONNX model with the first available of the requested execution providers."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: Path,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        threads: int = 0,
        runs: int = 0,
        solo: bool = False,
    ) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        skipped = [p for p in providers if p not in available]
        if skipped:
            log.warning(
                "%s: execution providers %s are not available in this ONNX Runtime (it has %s); falling back to %s",
                path,
                ", ".join(skipped),
                ", ".join(available),
                chosen[0],
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
        # `runs` at once (0: two on a machine of several cores, else one): a second run on the same session fills
        # the cores a run leaves idle. A multi-thread run's parallel sections wait for the slowest thread and pause
        # between operators (YOLO11n on 2 cores answered 16 clients about 15 % faster, one client as fast); a
        # single-thread run leaves its core idle whenever the server's other work (pre- and post-processing, the
        # event loop; all under one GIL) is not ready to take it (YOLOX-Nano, two single-thread sessions on 2
        # cores: 16 clients 9 % faster, 4 camera streams 16 % more frames)
        self.concurrent_runs = runs or (2 if (os.cpu_count() or 1) > 1 else 1)
        self.solo = solo
        options.inter_op_num_threads = 1
        # a solo session's threads spin between its operators, and only while it runs (they stop as a run ends):
        # YOLO26n / YOLO11n alone on 2 cores, in-process: 44 / 52 ms a run against 54 / 57 asleep between them. A
        # solo session runs when the queue's sessions are idle; other sessions' threads never spin: they would take
        # cores from the runs beside them and the server's other work
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if solo else "0")
        if solo:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelLoadError(f"{path}: cannot be loaded as an ONNX model: {exc}") from None
        self.providers: list[str] = self._session.get_providers()
        self.inputs = [_spec(node, path) for node in self._session.get_inputs()]
        self.outputs = [_spec(node, path) for node in self._session.get_outputs()]
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._output_names = [spec.name for spec in self.outputs]
        self._shrink = ort.RunOptions()  # a run with it frees the memory arena's unused chunks as it ends
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference and return every output by name."""
        feeds = {name: _as_strings(array) if array.dtype.kind == "O" else array for name, array in feeds.items()}
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results))

    def release_memory(self, one_row: dict[str, np.ndarray] | None) -> None:
        """One run of a batch of one that shrinks the session's memory arena as it ends (ONNX Runtime frees arena
        chunks only at the end of a run asked to; runs may go on meanwhile). Nothing without `one_row`."""
        if one_row is not None:
            self._session.run(self._output_names, one_row, self._shrink)


def _create(path: Path, options: RuntimeOptions) -> list[Backend]:
    """One session per instance, each with its share of the threads. Where the configuration leaves the layout to
    the runtime (no instances, threads or runs per instance) on several cores, on the CPU: a session with every
    core's threads for a request alone (`solo`), and `QUEUE_SESSIONS` sessions sharing the cores (single-thread on 2
    cores) serving a queue side by side: alone a request gets every core, and under load no run's parallel section
    waits on a thread another run holds (YOLO11n on 2 cores, 16 clients: 17.6 requests a second against 14.2 for one
    session of two threads taking two runs at once; one client as fast). Sessions are made side by side."""
    cores = os.cpu_count() or 1
    on_cpu = set(options.providers) <= {"CPUExecutionProvider"}  # a GPU's sessions do not share the CPU's cores
    if not (options.instances or options.threads or options.runs_per_instance) and cores > 1 and on_cpu:
        sessions = min(cores, QUEUE_SESSIONS)
        shares = [cores // sessions + (index < cores % sessions) for index in range(sessions)]  # every core used
        made = [(cores, 1, True)] + [(threads, 1, False) for threads in shares]
    else:
        made = [(options.threads_per_instance, options.runs_per_instance, False)] * (options.instances or 1)
    if len(made) == 1:
        return [OnnxRuntimeBackend(path, options.providers, *made[0])]
    with ThreadPoolExecutor(len(made), thread_name_prefix="onnxruntime-session") as pool:  # a load waits for one
        return list(pool.map(lambda each: OnnxRuntimeBackend(path, options.providers, *each), made))


register(Runtime("onnxruntime", OnnxRuntimeBackend.platform, _create))
