"""What the data plane and the repository need of anything served under a name: a model version
(`repository.handle.ModelHandle`) or a pipeline over model versions (`pipelines.pipeline.Pipeline`)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from kakehashi.backends.base import TensorSpec
from kakehashi.metrics import VersionSeries
from kakehashi.repository.config import ModelConfig
from kakehashi.repository.handle import ModelState
from kakehashi.tasks.images import ImageData
from kakehashi.tasks.params import PredictParams


class Signature(Protocol):
    """What metadata shows of a servable: how it runs, and its tensors."""

    @property
    def platform(self) -> str: ...

    @property
    def providers(self) -> list[str]: ...

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...


class Servable(Protocol):
    name: str
    version: int
    reason: str
    state: ModelState
    series: VersionSeries
    last_inference_ms: int

    @property
    def ready(self) -> bool: ...

    @property
    def kind(self) -> str: ...

    @property
    def runtime(self) -> str: ...

    @property
    def precision(self) -> str: ...

    @property
    def config(self) -> ModelConfig: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def preferred_batch_size(self) -> int: ...

    @property
    def runs_at_once(self) -> int: ...

    def load(self) -> None: ...

    def serving(self) -> AbstractContextManager[None]: ...

    def require_ready(self) -> Signature: ...

    def publish_state(self) -> None: ...

    def wait_warm(self, timeout: float | None = None) -> bool: ...

    def abandon_queued(self, reason: str) -> int: ...

    async def close(self, grace_seconds: float = 30.0) -> None: ...

    async def infer(self, feeds: dict[str, np.ndarray], timeout_ms: float | None = None) -> dict[str, np.ndarray]: ...

    async def predict(
        self, images: Sequence[ImageData], params: PredictParams, timeout_ms: float | None = None
    ) -> list: ...
