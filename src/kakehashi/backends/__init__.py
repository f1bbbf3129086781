"""Inference runtimes behind one interface (`base.Backend`), and the choice between them for a model."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from pathlib import Path

from kakehashi.backends.base import Backend
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.errors import ModelLoadError
from kakehashi.repository.config import ModelConfig

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "openvino")


def auto_backend() -> str:
    """What `auto` means here: OpenVINO when installed (measured faster on x86 CPUs, see benchmarks/), else
    ONNX Runtime."""
    return "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"


def create_instances(path: Path, config: ModelConfig, threads: int, default: str = "auto") -> list[Backend]:
    """The model's inference instances: `config.instances` ONNX Runtime sessions, or one OpenVINO compiled
    model with that many infer requests (the same object once per instance). With `auto`, a model OpenVINO
    cannot serve (e.g. string tensors) falls back to ONNX Runtime, and the log says so."""
    chosen = config.backend if config.backend != "auto" else default
    kind = auto_backend() if chosen == "auto" else chosen
    if kind == "openvino":
        from kakehashi.backends.openvino import OpenVinoBackend

        try:
            backend = OpenVinoBackend(path, config.performance_hint, config.instances, config.threads or 0)
            return [backend] * config.instances
        except ModelLoadError as exc:
            if chosen != "auto":
                raise
            log.warning("%s: OpenVINO cannot serve this model (%s); using ONNX Runtime", path, exc.message)
    return [OnnxRuntimeBackend(path, config.providers, threads) for _ in range(config.instances)]


def create_scratch(path: Path, config: ModelConfig, threads: int, default: str = "auto") -> Backend:
    """One more instance of the same kind, for timing batch sizes without touching the serving instances."""
    return create_instances(path, replace(config, instances=1), threads, default)[0]
