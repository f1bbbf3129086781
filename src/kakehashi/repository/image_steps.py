"""How one image of a predict request becomes a model's feeds, and its outputs become results: through the
model's task, or through its handler (the model's own Python). Both run in the compute pool, but for what
`ModelHandle` measured cheaper than the hop there (a task's small JPEG, a classifier's post-processing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kakehashi.errors import InferenceFailed
from kakehashi.handlers import Handler, call_hook
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.images import ImageData, Opened, rgb_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.registry import ImageTask

Feeds = dict[str, np.ndarray]


class ImageSteps(Protocol):
    @property
    def checked(self) -> bool:
        """True: the feeds come from code outside Kakehashi, and are checked against the model."""
        ...

    def prepare(self, data: ImageData) -> tuple[Feeds, tuple[int, int], Any]:
        """One image to feeds (with the batch dimension), its original shape (h, w) and what `finish` needs."""
        ...

    def finish(self, outputs: Feeds, state: Any) -> list[dict]:
        """One image's outputs (batch dimension removed) to its results."""
        ...


@dataclass(frozen=True)
class TaskSteps:
    task: ImageTask
    params: PredictParams
    max_pixels: int
    checked: bool = False

    def prepare(self, data: ImageData | Opened) -> tuple[Feeds, tuple[int, int], Any]:
        prepared = prepare_image(data, self.task.input, self.params, self.max_pixels)
        return {self.task.input.name: prepared.tensor[None]}, prepared.original_shape, prepared

    def finish(self, outputs: Feeds, state: Any) -> list[dict]:
        return self.task.postprocess(outputs, state, self.params)


@dataclass(frozen=True)
class HandlerSteps:
    handler: Handler
    params: PredictParams
    max_pixels: int
    checked: bool = True

    def prepare(self, data: ImageData) -> tuple[Feeds, tuple[int, int], Any]:
        image = rgb_image(data, self.max_pixels)
        feeds = call_hook("preprocess", self.handler.preprocess, image, self.params)
        if not isinstance(feeds, dict) or not all(isinstance(v, np.ndarray) for v in feeds.values()):
            raise InferenceFailed("the model's handler's preprocess must return {input name: numpy array}")
        return {name: value[None] for name, value in feeds.items()}, (image.height, image.width), image

    def finish(self, outputs: Feeds, state: Any) -> list[dict]:
        results = call_hook("postprocess", self.handler.postprocess, outputs, state, self.params)
        if not isinstance(results, list):
            raise InferenceFailed("the model's handler's postprocess must return a list of results")
        return results
