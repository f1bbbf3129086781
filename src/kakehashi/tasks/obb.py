"""Oriented boxes: a raw head `[4 + nc + 1, N]` (cx, cy, w, h, class scores, angle in radians), rotated NMS,
and each box as its four corners in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kakehashi.errors import ModelLoadError
from kakehashi.tasks.detection_head import output_dims
from kakehashi.tasks.heads import select
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.nms import rotated_nms
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import ModelFacts, TaskKind, numbered_names, register


def corners(rboxes: np.ndarray) -> np.ndarray:
    """(n, 5) cx, cy, w, h, angle → (n, 4, 2) corners, in the order Ultralytics gives them."""
    cos, sin = np.cos(rboxes[:, 4]), np.sin(rboxes[:, 4])
    along = np.stack([rboxes[:, 2] / 2 * cos, rboxes[:, 2] / 2 * sin], -1)
    across = np.stack([-rboxes[:, 3] / 2 * sin, rboxes[:, 3] / 2 * cos], -1)
    centre = rboxes[:, :2]
    return np.stack(
        [centre + along + across, centre + along - across, centre - along - across, centre - along + across], 1
    )


@dataclass(frozen=True)
class ObbTask:
    """An oriented-box detector (Ultralytics `obb`)."""

    input: ImageInput
    output: str
    names: tuple[str, ...]
    kind: str = "obb"

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """`[{class, name, confidence, box: {x1, y1, …, x4, y4}}]`, best first."""
        pred = outputs[self.output]
        class_scores = pred[4:-1]
        classes = class_scores.argmax(0)
        scores = np.take_along_axis(class_scores, classes[None], 0)[0]
        candidates = scores > params.conf
        rboxes = np.concatenate([pred[:4], pred[-1:]])[:, candidates].T
        found = select(rboxes, scores[candidates], classes[candidates], params, suppress=rotated_nms)
        points = prepared.transform.points_to_original(corners(found.boxes), clip=False)
        points = points.astype(np.float64).round(params.decimals)
        results = []
        for cls, score, quad in zip(
            found.classes.tolist(), found.scores.astype(np.float64).round(params.decimals), points
        ):
            box = {f"{axis}{i + 1}": float(quad[i][j]) for i in range(4) for j, axis in enumerate("xy")}
            results.append(
                {
                    "class": cls,
                    "name": self.names[cls] if 0 <= cls < len(self.names) else str(cls),
                    "confidence": float(score),
                    "box": box,
                }
            )
        return results


def _build(facts: ModelFacts) -> ObbTask:
    """An oriented-box detector reads one raw head [N, 4 + classes + 1, anchors]."""
    outputs = facts.backend.outputs
    if facts.meta.get("end2end") is True or facts.head == "end2end":
        raise ModelLoadError(
            f"{facts.path}: end-to-end oriented-box heads are not supported yet; export with "
            f"end2end=False (the raw head [N, 4 + classes + 1, anchors], rotated NMS here)"
        )
    if len(outputs) != 1 or len(outputs[0].shape) != 3:
        raise ModelLoadError(f"{facts.path}: task 'obb' needs one output [N, 4 + classes + 1, anchors]")
    names = facts.names or numbered_names(output_dims(facts.backend, facts.probe)[0] - 5)
    return ObbTask(facts.image_input, outputs[0].name, names)


register(TaskKind("obb", _build))
