"""Inference runtimes behind one interface (`base.Backend`), found in the registry, and the choice between them
for a model."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kakehashi.backends import onnxruntime, openvino  # noqa: F401  (each runtime registers itself when imported)
from kakehashi.backends.base import Backend
from kakehashi.backends.registry import AUTO, RUNTIMES, RuntimeOptions, runtime_named, runtime_of
from kakehashi.errors import ModelLoadError

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
AUTO_STARTS_ON = "onnxruntime"  # serves every ONNX model; `auto` then times the other runtimes against it


def create_instances(path: Path, runtime: str, options: RuntimeOptions) -> list[Backend]:
    """The model's inference instances on the runtime named `runtime`; `auto` starts on ONNX Runtime, and
    `faster_runtime` may then switch."""
    return runtime_named(AUTO_STARTS_ON if runtime == AUTO else runtime).create(path, options)


def _best_seconds(backend: Backend, feeds: Feeds, runs: int = 5) -> float:
    backend.run(feeds)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(feeds)
        best = min(best, time.perf_counter() - started)
    return best


def faster_runtime(path: Path, options: RuntimeOptions, instances: list[Backend], feeds: Feeds) -> list[Backend]:
    """For `auto`: time `instances` and every other installed runtime on `feeds` and keep the fastest; the log says
    what was measured. A runtime that cannot load the model is left out."""
    current = runtime_of(instances[0])
    candidates = {current.name: instances}
    for runtime in RUNTIMES.values():
        if runtime is current or not runtime.available():
            continue
        try:
            candidates[runtime.name] = runtime.create(path, options)
        except ModelLoadError as exc:
            log.info("%s: %s cannot serve this model (%s); left out", path, runtime.name, exc.message)
    if len(candidates) == 1:
        return instances
    seconds = {name: _best_seconds(each[0], feeds) for name, each in candidates.items()}
    fastest = min(seconds, key=seconds.__getitem__)
    timings = ", ".join(f"{name} {each * 1000:.1f} ms" for name, each in seconds.items())
    log.info("%s: %s per inference; serving with %s", path, timings, fastest)
    return candidates[fastest]


def create_scratch(path: Path, options: RuntimeOptions, instance: Backend) -> Backend:
    """One more instance like `instance`, for timing batch sizes without touching the serving instances."""
    return runtime_of(instance).create(path, replace(options, instances=1))[0]
