"""Object detection: decoded head output to Ultralytics-style results in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kakehashi.tasks.detection_head import detection_head
from kakehashi.tasks.heads import Detections, Head
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import ModelFacts, TaskKind, register


@dataclass(frozen=True)
class DetectTask:
    """A detector: its input, head and class names."""

    input: ImageInput
    head: Head
    names: tuple[str, ...]
    kind: str = "detect"

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """One image's outputs to `[{class, name, confidence, box: {x1, y1, x2, y2}}]`, best first."""
        return box_results(self.head.decode(outputs, prepared.size, params), prepared, params, self.names)


def box_results(found: Detections, prepared: Prepared, params: PredictParams, names: tuple[str, ...]) -> list[dict]:
    """Detections as `[{class, name, confidence, box: {x1, y1, x2, y2}}]` in original pixels, best first."""
    boxes = prepared.transform.to_original(found.boxes).astype(np.float64).round(params.decimals).tolist()
    scores = found.scores.astype(np.float64).round(params.decimals).tolist()
    return [
        {
            "class": cls,
            "name": names[cls] if 0 <= cls < len(names) else str(cls),
            "confidence": score,
            "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
        }
        for (x1, y1, x2, y2), score, cls in zip(boxes, scores, found.classes.tolist())
    ]


def _build(facts: ModelFacts) -> DetectTask:
    head, names = detection_head(facts, extra=0)
    return DetectTask(facts.image_input, head, names)


register(TaskKind("detect", _build))
