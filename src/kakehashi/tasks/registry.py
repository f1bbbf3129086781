"""The image tasks Kakehashi serves: each task module registers how its task is built from what the load learned
about a model, and resolution (and the `task` key of `model.yaml`) asks this registry, so a new task is one new
module and one registration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from kakehashi.backends.base import Backend
from kakehashi.errors import ModelLoadError
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput

RAW_TENSORS = "tensor"  # not an image task: the model is served as raw tensors only


class ImageTask(Protocol):
    """What serving an image needs from a task: its input, class names, and one image's outputs as results."""

    @property
    def kind(self) -> str: ...

    @property
    def input(self) -> ImageInput: ...

    @property
    def names(self) -> tuple[str, ...]: ...

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """One image's outputs as its results, best first."""
        ...


@dataclass(frozen=True)
class ModelFacts:
    """What a task's builder may use: the loaded model, its image input and what `model.yaml` and the model's
    metadata say."""

    backend: Backend
    image_input: ImageInput
    names: tuple[str, ...]  # from model.yaml or the metadata; empty: the builder numbers the classes
    meta: dict[str, object]  # Ultralytics' metadata
    tf_od: dict[str, str]  # TF Object Detection API role → output name (empty for other models)
    head: str | None  # model.yaml's `head`
    kpt_shape: tuple[int, int] | None  # model.yaml's `kpt_shape`
    path: Path
    probe: Callable[[], dict[str, np.ndarray]]  # the model's outputs for a blank image (run at most once)


@dataclass(frozen=True)
class TaskKind:
    """One image task: its name in `model.yaml`, how it is built, and how images are resized by default."""

    name: str
    build: Callable[[ModelFacts], ImageTask]
    default_resize: str = "letterbox"


TASK_KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> None:
    """Make `kind` available by its name; a task module calls this once, when imported."""
    TASK_KINDS[kind.name] = kind


def task_choices() -> tuple[str, ...]:
    """Every value `task` may take: the registered tasks, then `tensor`."""
    return (*TASK_KINDS, RAW_TENSORS)


def task_named(name: str) -> TaskKind:
    """The registered task called `name`."""
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise ModelLoadError(f"unknown task '{name}' (known: {', '.join(task_choices())})") from None


def numbered_names(count: int) -> tuple[str, ...]:
    """Class names for a model that has none: its class indices."""
    return tuple(str(i) for i in range(count))
