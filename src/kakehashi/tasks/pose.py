"""Pose estimation: detections with keypoints (`kpt_shape` [K, 2 or 3]) in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kakehashi.errors import ModelLoadError
from kakehashi.tasks.detect import box_results
from kakehashi.tasks.detection_head import detection_head
from kakehashi.tasks.heads import Head
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import ModelFacts, TaskKind, register


@dataclass(frozen=True)
class PoseTask:
    """A pose model: a detection head whose extra columns are K keypoints of (x, y[, visibility])."""

    input: ImageInput
    head: Head
    names: tuple[str, ...]
    kpt_shape: tuple[int, int]
    kind: str = "pose"

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """Each result gets `keypoints: {x, y, visible}` (visible: the keypoint's confidence, 1 if the model
        gives none), the points clipped to the image."""
        found = self.head.decode(outputs, prepared.size, params)
        results = box_results(found, prepared, params, self.names)
        count, dims = self.kpt_shape
        assert found.extra is not None, "a pose head always decodes its keypoint columns"
        points = found.extra.reshape(len(results), count, dims)
        xy = prepared.transform.points_to_original(points[..., :2]).astype(np.float64).round(params.decimals)
        visible = (
            points[..., 2].astype(np.float64).round(params.decimals) if dims == 3 else np.ones((len(results), count))
        )
        for result, point, seen in zip(results, xy, visible):
            result["keypoints"] = {"x": point[:, 0].tolist(), "y": point[:, 1].tolist(), "visible": seen.tolist()}
        return results


def _kpt_shape(facts: ModelFacts) -> tuple[int, int]:
    """Keypoints per object and values per keypoint, from model.yaml or else the model's metadata."""
    if facts.kpt_shape:
        return facts.kpt_shape
    shape = facts.meta.get("kpt_shape")
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == 2
        and shape[1] in (2, 3)
        and all(isinstance(v, int) and v > 0 for v in shape)
    ):
        raise ModelLoadError(
            f"{facts.path}: task 'pose' needs 'kpt_shape' [keypoints, 2 or 3] in model.yaml or the "
            f"model's metadata; got {shape!r}"
        )
    return int(shape[0]), int(shape[1])


def _build(facts: ModelFacts) -> PoseTask:
    """A pose model has a detection head whose rows carry every keypoint's values."""
    kpt_shape = _kpt_shape(facts)
    head, names = detection_head(facts, extra=kpt_shape[0] * kpt_shape[1])
    return PoseTask(facts.image_input, head, names, kpt_shape)


register(TaskKind("pose", _build))
