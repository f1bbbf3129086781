"""A pipeline servable: detect (optionally per tile, merged with NMS), then classify chosen detections' crops.

Its steps run on other models of the repository through their own handles, so crops and tiles of concurrent
requests are batched together by each member's batcher and show in its statistics. Members are looked up at every
request: a member reloaded under load serves the next request, and the one it replaces finishes what it holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from kakehashi.backends.base import TensorSpec
from kakehashi.errors import InvalidInput, KakehashiError, ModelLoadError, Unavailable
from kakehashi.metrics import VersionSeries
from kakehashi.pipelines.config import CropStep, Member, PipelineConfig, TileStep, load_pipeline_config
from kakehashi.repository.config import ModelConfig
from kakehashi.repository.handle import ImagePrediction, ModelState
from kakehashi.servable import Servable
from kakehashi.settings import Limits
from kakehashi.tasks.images import ImageData, rgb_image
from kakehashi.tasks.nms import batched_nms
from kakehashi.tasks.params import PredictParams
from kakehashi.users import Users

log = logging.getLogger(__name__)

Lookup = Callable[[str, int | None], Servable]
BOX_TASKS = ("detect", "segment", "pose")  # results with an axis-aligned `box` to crop
PLATFORM = "kakehashi_pipeline"


@dataclass(frozen=True)
class PipelineSignature:
    """What metadata shows for a pipeline: it takes images (on the predict endpoint), not tensors."""

    platform: str = PLATFORM
    inputs: list[TensorSpec] = field(default_factory=lambda: [TensorSpec("image", "BYTES", (-1,))])
    outputs: list[TensorSpec] = field(default_factory=list)
    providers: list[str] = field(default_factory=lambda: ["pipeline"])


def tile_origins(length: int, size: int, overlap: float) -> list[int]:
    """Where tiles of `size` start along a side of `length`: `size × (1 - overlap)` apart, the last one flush with
    the far edge (one tile when the side is no longer than a tile)."""
    if length <= size:
        return [0]
    step = max(1, int(size * (1 - overlap)))
    return [*range(0, length - size, step), length - size]


class Pipeline:
    """A servable of steps over member models (see `pipelines.config`), answering `predict` like a model."""

    version = 1
    max_batch_size = 1
    last_inference_ms = 0
    queue_depth = 0
    task = None

    def __init__(self, name: str, path: Path, lookup: Lookup, compute: Executor, limits: Limits) -> None:
        self.name = name
        self.path = path
        self.reason = ""
        self.spec: PipelineConfig | None = None
        self._lookup = lookup
        self._compute = compute
        self._limits = limits
        self._users = Users()
        self.series = VersionSeries.of(name, str(self.version))
        self._set_state(ModelState.LOADING)

    # -- lifecycle, as a model version's ------------------------------------------------------------

    def _set_state(self, state: ModelState) -> None:
        self.state = state
        self.publish_state()

    def publish_state(self) -> None:
        self.series.state(self.state.value, [each.value for each in ModelState])

    def load(self) -> None:
        """Read `pipeline.yaml` and check that every member is served with the task its step needs."""
        try:
            spec = load_pipeline_config(self.path)
            self._check_member(spec.detect, "tile" if spec.tile else "detect", ("detect",) if spec.tile else BOX_TASKS)
            if spec.classify is not None:
                self._check_member(spec.classify, "classify", ("classify",))
        except KakehashiError as exc:
            self.reason = exc.message
            log.error("pipeline %s failed to load: %s", self.name, exc.message)
            self._set_state(ModelState.FAILED)
            return
        self.spec = spec
        self._set_state(ModelState.READY)
        log.info("pipeline %s ready: %s", self.name, self.runtime)

    def _check_member(self, member: Member, step: str, kinds: tuple[str, ...]) -> None:
        try:
            handle = self._lookup(member.model, member.version)
            handle.require_ready()
        except KakehashiError as exc:
            raise ModelLoadError(f"{self.path}: step '{step}': {exc.message}") from None
        if handle.kind not in kinds:
            raise ModelLoadError(
                f"{self.path}: step '{step}': model '{member.model}' is a {handle.kind} model; "
                f"this step needs {' or '.join(kinds)}"
            )

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    @property
    def kind(self) -> str:
        return "pipeline"

    @property
    def precision(self) -> str:
        """Each member has its own (see their status)."""
        return ""

    @property
    def runtime(self) -> str:
        """The steps, e.g. `pipeline: tile → detect yolo26n → crop → classify sku`."""
        if self.spec is None:
            return "pipeline"
        spec = self.spec
        steps = [
            *(["tile"] if spec.tile else []),
            f"detect {spec.detect.model}",
            *(["crop", f"classify {spec.classify.model}"] if spec.classify else []),
        ]
        return "pipeline: " + " → ".join(steps)

    @property
    def config(self) -> ModelConfig:
        """The detector's configuration: a request's parameters are the detector's, over its defaults."""
        return self._member(self._ready_spec().detect).config

    @property
    def preferred_batch_size(self) -> int:
        return self._member(self._ready_spec().detect).preferred_batch_size

    @property
    def runs_at_once(self) -> int:
        return self._member(self._ready_spec().detect).runs_at_once

    def wait_warm(self, timeout: float | None = None) -> bool:
        """A pipeline runs on its members' instances: nothing of its own to warm."""
        return True

    def require_ready(self) -> PipelineSignature:
        self._ready_spec()
        return PipelineSignature()

    def _ready_spec(self) -> PipelineConfig:
        if self.spec is None or not self.ready:
            raise Unavailable(f"pipeline '{self.name}' is not ready ({self.state.value}): {self.reason}")
        return self.spec

    def serving(self) -> AbstractContextManager[None]:
        return self._users.serving()

    def abandon_queued(self, reason: str) -> int:
        return 0  # its work waits in its members' queues, which answer for it

    async def close(self, grace_seconds: float = 30.0) -> None:
        await self._users.gone(grace_seconds)
        self._set_state(ModelState.UNLOADED)

    # -- requests -------------------------------------------------------------------------------------

    def _member(self, member: Member) -> Servable:
        return self._lookup(member.model, member.version)

    async def infer(self, feeds: dict[str, np.ndarray], timeout_ms: float | None = None) -> dict[str, np.ndarray]:
        raise InvalidInput(f"'{self.name}' is a pipeline over images; use POST /v1/models/{self.name}/predict")

    async def predict(
        self, images: Sequence[ImageData], params: PredictParams, timeout_ms: float | None = None
    ) -> list[ImagePrediction]:
        """Each image through the steps; the first failure cancels the request's other images."""
        spec = self._ready_spec()
        if len(images) > self._limits.max_images:
            raise InvalidInput(f"{len(images)} images in one request; the limit is {self._limits.max_images}")
        deadline = None if timeout_ms is None else time.perf_counter() + timeout_ms / 1000
        try:
            async with asyncio.TaskGroup() as group:
                answers = [group.create_task(self._one(spec, data, params, deadline)) for data in images]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [answer.result() for answer in answers]

    async def _one(
        self, spec: PipelineConfig, data: ImageData, params: PredictParams, deadline: float | None
    ) -> ImagePrediction:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        image = (
            data
            if isinstance(data, Image.Image)
            else await loop.run_in_executor(self._compute, rgb_image, data, self._limits.max_pixels)
        )
        decoded = time.perf_counter()
        if spec.tile is not None:
            results = await self._detect_tiles(spec.detect, spec.tile, image, params, deadline)
        else:
            [found] = await self._run(spec.detect, [image], params, deadline)
            results = found.results
        detected = time.perf_counter()
        if spec.classify is not None:
            await self._classify(spec, image, results, params, deadline)
        finished = time.perf_counter()
        speed = {
            "preprocess": _ms(decoded - started),
            "detect": _ms(detected - decoded),
            "classify": _ms(finished - detected),
        }
        return ImagePrediction((image.height, image.width), results, speed)

    async def _run(
        self, member: Member, images: list[Image.Image], params: PredictParams, deadline: float | None
    ) -> list[ImagePrediction]:
        """`images` through a member's own handle (its admission, batcher and statistics), in requests of at most
        the images one request may carry, sent together; the predictions in the images' order."""
        handle = self._member(member)
        step = self._limits.max_images
        with handle.serving():
            left = None if deadline is None else max(1.0, (deadline - time.perf_counter()) * 1000)
            async with asyncio.TaskGroup() as group:
                parts = [
                    group.create_task(handle.predict(images[start : start + step], params, left))
                    for start in range(0, len(images), step)
                ]
        return [prediction for part in parts for prediction in part.result()]

    async def _detect_tiles(
        self, member: Member, tile: TileStep, image: Image.Image, params: PredictParams, deadline: float | None
    ) -> list[dict]:
        """Detections of every tile, in the image's pixels, merged with class-aware NMS."""
        boxes = [
            (left, top, min(left + tile.size, image.width), min(top + tile.size, image.height))
            for top in tile_origins(image.height, tile.size, tile.overlap)
            for left in tile_origins(image.width, tile.size, tile.overlap)
        ]
        crops = await asyncio.get_running_loop().run_in_executor(self._compute, _crops, image, boxes)
        predictions = await self._run(member, crops, params, deadline)
        found = [
            result | {"box": _shifted(result["box"], left, top)}
            for (left, top, _, _), prediction in zip(boxes, predictions)
            for result in prediction.results
        ]
        if not found:
            return []
        corners = np.array([[r["box"][k] for k in ("x1", "y1", "x2", "y2")] for r in found], np.float64)
        scores = np.array([r["confidence"] for r in found], np.float64)
        classes = np.array([r["class"] for r in found], np.int64)
        keep = batched_nms(corners, scores, classes, tile.iou, params.max_det)
        return [found[index] for index in keep]

    async def _classify(
        self,
        spec: PipelineConfig,
        image: Image.Image,
        results: list[dict],
        params: PredictParams,
        deadline: float | None,
    ) -> None:
        """Give each chosen detection `classification`: its crop's top classes from the classifier."""
        assert spec.classify is not None
        crop = spec.crop or CropStep()
        chosen = [result for result in results if _wanted(result, crop)]
        if not chosen:
            return
        boxes = [_padded(result["box"], crop.pad, image.width, image.height) for result in chosen]
        crops = await asyncio.get_running_loop().run_in_executor(self._compute, _crops, image, boxes)
        classify_params = replace(params, top_k=spec.classify.top_k, classes=None, imgsz=None)
        answers = await self._run(spec.classify, crops, classify_params, deadline)
        for result, answer in zip(chosen, answers):
            result["classification"] = answer.results


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _crops(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[Image.Image]:
    return [image.crop(box) for box in boxes]


def _shifted(box: dict, left: int, top: int) -> dict:
    return {"x1": box["x1"] + left, "y1": box["y1"] + top, "x2": box["x2"] + left, "y2": box["y2"] + top}


def _wanted(result: dict, crop: CropStep) -> bool:
    box = result["box"]
    big_enough = min(box["x2"] - box["x1"], box["y2"] - box["y1"]) >= crop.min_size
    return big_enough and (crop.classes is None or result["class"] in crop.classes)


def _padded(box: dict, pad: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box grown by `pad` of its size on every side, in whole pixels inside the image."""
    grow_x, grow_y = (box["x2"] - box["x1"]) * pad, (box["y2"] - box["y1"]) * pad
    return (
        max(0, math.floor(box["x1"] - grow_x)),
        max(0, math.floor(box["y1"] - grow_y)),
        min(width, math.ceil(box["x2"] + grow_x)),
        min(height, math.ceil(box["y2"] + grow_y)),
    )
