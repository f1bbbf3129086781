"""Pose estimation: detections with keypoints (`kpt_shape` [K, 2 or 3]) in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kakehashi.tasks.detect import box_results
from kakehashi.tasks.heads import Head
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput


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
