"""Run models in-process through the same repository and handle the server uses."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kakehashi.protocols.vision import parse_params
from kakehashi.repository.handle import ImagePrediction, ModelHandle
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits

_POOL = ThreadPoolExecutor(2)


def load(path: Path, name: str | None = None) -> ModelHandle:
    repository = ModelRepository(path, _POOL, Limits(max_pixels=100_000_000))
    repository.load_all()
    return repository.get(name or next(iter(repository.entries)))


def predict(handle: ModelHandle, *images: bytes, **params) -> list[ImagePrediction]:
    values = {key: [str(value)] for key, value in params.items()}
    return asyncio.run(handle.predict(list(images), parse_params(values, handle.config.defaults)))
