"""The model handle: one loaded model version, the single entry point for every transport."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np

from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.datatypes import oip_datatype
from kakehashi.errors import InvalidInput, KakehashiError, Unavailable
from kakehashi.repository.config import ModelConfig
from kakehashi.tasks.image_task import Prepared, prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import ImageTask, resolve_task

log = logging.getLogger(__name__)


class ModelState(str, Enum):
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "UNAVAILABLE"
    UNLOADED = "UNLOADED"


@dataclass(frozen=True)
class ImagePrediction:
    """One image's answer: original shape (h, w), results, and where its time went (ms)."""

    shape: tuple[int, int]
    results: list[dict]
    speed: dict[str, float]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class ModelHandle:
    """A model version: loads once, then answers raw-tensor `infer` and image `predict` calls."""

    def __init__(self, name: str, version: int, path: Path, config: ModelConfig, compute: Executor,
                 max_pixels: int) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.config = config
        self.state = ModelState.LOADING
        self.reason = ""
        self.backend: Backend | None = None
        self.task: ImageTask | None = None
        self._compute = compute
        self._max_pixels = max_pixels
        self._inference = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}-{version}")
        self._max_batch = 1

    # -- lifecycle -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the backend, resolve the task and warm up; on failure the state says why."""
        started = time.perf_counter()
        try:
            backend = OnnxRuntimeBackend(self.path, self.config.providers)
            self.task = resolve_task(backend, self.config, self.path)
            self.backend = backend
            first_dim = backend.inputs[0].shape[0] if backend.inputs and backend.inputs[0].shape else 1
            self._max_batch = 1 if first_dim == 1 else 64
            if self.config.warmup and self.task is not None:
                self._warm_up()
        except KakehashiError as exc:
            self.state, self.reason = ModelState.FAILED, exc.message
            log.error("model %s version %s failed to load: %s", self.name, self.version, exc.message)
            return
        self.state = ModelState.READY
        log.info("model %s version %s ready in %.2f s (task %s)", self.name, self.version,
                 time.perf_counter() - started, self.kind)

    def unload(self) -> None:
        """Stop serving and release the runtime session."""
        self.state, self.backend = ModelState.UNLOADED, None
        self._inference.shutdown(wait=True)

    def _warm_up(self) -> None:
        spec = self.task.input
        blank = np.zeros((1, *spec.tensor_shape(spec.size)), dtype=np.dtype(spec.dtype))
        for _ in range(2):
            self.backend.run({spec.name: blank})

    @property
    def kind(self) -> str:
        """`detect`, `classify` or `tensor`."""
        return self.task.kind if self.task is not None else "tensor"

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def require_ready(self) -> Backend:
        if self.state is not ModelState.READY or self.backend is None:
            detail = f": {self.reason}" if self.reason else ""
            raise Unavailable(f"model '{self.name}' version {self.version} is not ready ({self.state.value}){detail}")
        return self.backend

    # -- raw tensors (OIP v2) ----------------------------------------------------------------------

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Check names, datatypes and shapes of request tensors against the model's inputs."""
        backend = self.require_ready()
        expected = {spec.name: spec for spec in backend.inputs}
        unknown = sorted(set(feeds) - set(expected))
        if unknown:
            raise InvalidInput(f"unknown input {unknown[0]!r}; model '{self.name}' takes {sorted(expected)}")
        missing = sorted(set(expected) - set(feeds))
        if missing:
            raise InvalidInput(f"missing input {missing[0]!r}; model '{self.name}' takes {sorted(expected)}")
        for name, array in feeds.items():
            _check_tensor(expected[name], oip_datatype(array.dtype), array.shape)

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked raw tensors through the model; returns every output by name."""
        backend = self.require_ready()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._inference, backend.run, feeds)
        except Exception as exc:  # the runtime rejected values the shape checks could not see
            raise InvalidInput(f"model '{self.name}' could not run this input: {_first_line(exc)}") from None

    # -- images -------------------------------------------------------------------------------------

    async def predict(self, images: Sequence[bytes], params: PredictParams) -> list[ImagePrediction]:
        """Decode, pre-process, infer and post-process `images`; pre/post run in the compute pool."""
        backend = self.require_ready()
        task = self.task
        if task is None:
            raise InvalidInput(
                f"model '{self.name}' serves raw tensors only; use POST /v2/models/{self.name}/infer"
            )
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(
            loop.run_in_executor(self._compute, self._prepare, index, data, params, len(images) > 1)
            for index, data in enumerate(images)
        ))
        outputs, speeds = await self._run_images(backend, task.input.name, [p for p, _ in prepared])
        results = await asyncio.gather(*(
            loop.run_in_executor(self._compute, _timed, task.postprocess, out, prep, params)
            for out, (prep, _) in zip(outputs, prepared)
        ))
        return [
            ImagePrediction(prep.original_shape, found,
                            {"preprocess": pre_ms, **speed, "postprocess": post_ms})
            for (prep, pre_ms), speed, (found, post_ms) in zip(prepared, speeds, results)
        ]

    def _prepare(self, index: int, data: bytes, params: PredictParams, numbered: bool) -> tuple[Prepared, float]:
        started = time.perf_counter()
        try:
            prepared = prepare_image(data, self.task.input, params, self._max_pixels)
        except KakehashiError as exc:
            if numbered:
                exc.message = f"image {index}: {exc.message}"
            raise
        return prepared, _ms(time.perf_counter() - started)

    async def _run_images(self, backend: Backend, input_name: str, prepared: list[Prepared]
                          ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]]]:
        """Infer images in batches of equal tensor shape; returns per-image outputs and timings."""
        loop = asyncio.get_running_loop()
        outputs: list[dict[str, np.ndarray]] = [{} for _ in prepared]
        speeds: list[dict[str, float]] = [{} for _ in prepared]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(prepared):
            by_shape.setdefault(item.tensor.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self._max_batch):
                chunk = indices[start:start + self._max_batch]
                batch = np.stack([prepared[i].tensor for i in chunk])
                submitted = time.perf_counter()
                result, began, ended = await loop.run_in_executor(self._inference, _run_timed, backend,
                                                                   {input_name: batch})
                for row, index in enumerate(chunk):
                    outputs[index] = {name: value[row] for name, value in result.items()}
                    speeds[index] = {"queue": _ms(began - submitted), "inference": _ms(ended - began)}
        return outputs, speeds


def _run_timed(backend: Backend, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float, float]:
    began = time.perf_counter()
    result = backend.run(feeds)
    return result, began, time.perf_counter()


def _timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, _ms(time.perf_counter() - started)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_tensor(spec: TensorSpec, datatype: str, shape: tuple[int, ...]) -> None:
    if datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {datatype}; the model expects {spec.datatype}")
    if len(shape) != len(spec.shape) or any(e not in (-1, s) for e, s in zip(spec.shape, shape)):
        raise InvalidInput(f"input '{spec.name}' has shape {list(shape)}; the model expects "
                           f"{list(spec.shape)} (-1 = any size)")
