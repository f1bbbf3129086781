"""Inference runtimes behind one interface (`base.Backend`), and the choice between them for a model."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.errors import ModelLoadError
from kakehashi.repository.config import ModelConfig

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def create_instances(path: Path, config: ModelConfig, threads: int, kind: str) -> list[Backend]:
    """The model's inference instances: `config.instances` ONNX Runtime sessions, or one OpenVINO compiled
    model with that many infer requests (the same object once per instance). `auto` starts on ONNX Runtime,
    which serves every ONNX model; `faster_runtime` may then switch to OpenVINO."""
    if kind == "openvino":
        from kakehashi.backends.openvino import OpenVinoBackend

        backend = OpenVinoBackend(
            path, config.performance_hint, config.instances, config.threads or 0, config.precision
        )
        return [backend] * config.instances
    providers = config.providers or ("CPUExecutionProvider",)
    return [OnnxRuntimeBackend(path, providers, threads) for _ in range(config.instances)]


def _best_seconds(backend: Backend, feeds: Feeds, runs: int = 5) -> float:
    backend.run(feeds)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(feeds)
        best = min(best, time.perf_counter() - started)
    return best


def faster_runtime(path: Path, config: ModelConfig, instances: list[Backend], feeds: Feeds) -> list[Backend]:
    """For `auto`: time ONNX Runtime and OpenVINO (when installed, FP32) on `feeds` and keep the faster; the log
    says what was measured. A model OpenVINO cannot load stays on ONNX Runtime."""
    if importlib.util.find_spec("openvino") is None:
        return instances
    try:
        candidate = create_instances(path, config, 0, "openvino")
    except ModelLoadError as exc:
        log.info("%s: OpenVINO cannot serve this model (%s); ONNX Runtime runs it", path, exc.message)
        return instances
    current, other = _best_seconds(instances[0], feeds), _best_seconds(candidate[0], feeds)
    winner = candidate if other < current else instances
    log.info(
        "%s: ONNX Runtime %.1f ms, OpenVINO %.1f ms per inference; serving with %s",
        path,
        current * 1000,
        other * 1000,
        winner[0].platform.removesuffix("_onnx"),
    )
    return winner


def create_scratch(path: Path, config: ModelConfig, instance: Backend, threads: int) -> Backend:
    """One more instance like `instance`, for timing batch sizes without touching the serving instances."""
    kind = "openvino" if instance.platform == "openvino" else "onnxruntime"
    return create_instances(path, config.model_copy(update={"instances": 1}), threads, kind)[0]
