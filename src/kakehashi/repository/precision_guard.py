"""The check a faster precision passes before it serves: its answers on calibration images against f32's.

An image model (a task of Kakehashi's) is compared by its answers, decoded at the model's default confidence
threshold lowered by the tolerance (`tasks.agreement`). A raw-tensor model, one with a handler, or one of a task
registered from outside (their own code may do anything with the outputs) is compared by its raw outputs: on fixed
pseudo-random inputs, or on the calibration images as its task prepares them.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend
from kakehashi.datatypes import OIP_TO_NUMPY
from kakehashi.errors import KakehashiError, ModelLoadError
from kakehashi.repository.config import ModelConfig
from kakehashi.repository.image_steps import TaskSteps
from kakehashi.tasks.agreement import Agreement, Tolerances, compare_detections, compare_outputs, compare_top1
from kakehashi.tasks.images import image_files
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import ImageTask

Feeds = dict[str, np.ndarray]
ANSWERS_COMPARED = {"detect", "segment", "pose", "obb", "classify"}  # the tasks whose answers `tasks.agreement` reads


def shipped_calibration_folder() -> Path:
    """The images Kakehashi ships for checking precisions (see `assets/calibration/ORIGIN.md`)."""
    return Path(str(resources.files("kakehashi") / "assets" / "calibration"))


def calibration_images(config: ModelConfig) -> list[Path]:
    """The images a model's precisions are checked on: its `agreement.images` folder, or the shipped ones."""
    folder = Path(config.agreement.images) if config.agreement.images else shipped_calibration_folder()
    return image_files([folder])


class PrecisionGuard:
    """Compares a candidate instance's answers with the f32 `reference` instance's, computed once."""

    def __init__(self, reference: Backend, task: ImageTask | None, config: ModelConfig, max_pixels: int) -> None:
        self._reference = reference
        self._task = task
        self._by_answers = task is not None and task.kind in ANSWERS_COMPARED  # else: raw outputs
        self._config = config
        self._max_pixels = max_pixels
        agreement = config.agreement
        self._tolerances = Tolerances(agreement.box_iou, agreement.confidence, agreement.output)

    @cached_property
    def _images(self) -> list[Path]:
        return calibration_images(self._config)

    @cached_property
    def _steps(self) -> TaskSteps:
        """Decoding at the threshold lowered by the tolerance, so near-threshold answers find their counterparts."""
        assert self._task is not None
        conf = max(0.0, self._config.defaults.conf - self._tolerances.confidence)
        params = PredictParams(conf=conf, iou=self._config.defaults.iou, max_det=self._config.defaults.max_det)
        return TaskSteps(self._task, params, self._max_pixels)

    @cached_property
    def _prepared(self) -> list[tuple[Feeds, object]]:
        prepared = []
        for path in self._images:
            try:
                feeds, _shape, state = self._steps.prepare(path.read_bytes())
            except KakehashiError as exc:
                raise ModelLoadError(f"calibration image {path}: {exc.message}") from None
            prepared.append((feeds, state))
        return prepared

    @cached_property
    def _tensor_feeds(self) -> list[Feeds]:
        """Three rows of pseudo-random inputs (the same on every load): floats in [0, 1), integers in [0, 10)."""
        generator = np.random.default_rng(0)
        rows = []
        for _ in range(3):
            feeds = {}
            for spec in self._reference.inputs:
                dtype = np.dtype(OIP_TO_NUMPY[spec.datatype])
                shape = (1, *spec.shape[1:])
                if dtype.kind == "f":
                    feeds[spec.name] = generator.random(shape).astype(dtype)
                else:
                    feeds[spec.name] = generator.integers(0, 10, shape).astype(dtype)
            rows.append(feeds)
        return rows

    def _answers(self, backend: Backend) -> list[list[dict]]:
        answers = []
        for feeds, state in self._prepared:
            outputs = backend.run(feeds)
            answers.append(self._steps.finish({name: value[0] for name, value in outputs.items()}, state))
        return answers

    def _outputs(self, backend: Backend) -> list[Feeds]:
        if self._task is None:
            return [backend.run(feeds) for feeds in self._tensor_feeds]
        return [backend.run(feeds) for feeds, _state in self._prepared]

    @cached_property
    def _expected(self) -> list:
        return self._answers(self._reference) if self._by_answers else self._outputs(self._reference)

    def check(self, candidate: Backend) -> Agreement:
        """How `candidate`'s answers agree with the reference's."""
        if not self._by_answers:
            return compare_outputs(self._expected, self._outputs(candidate), self._tolerances)
        labels = [path.name for path in self._images]
        assert self._task is not None
        if self._task.kind == "classify":
            return compare_top1(self._expected, self._answers(candidate), self._tolerances, labels)
        threshold = self._config.defaults.conf
        return compare_detections(self._expected, self._answers(candidate), threshold, self._tolerances, labels)
