"""The detection head of a detect, segment or pose model (from `model.yaml`, the metadata or the output shapes)
and its class names."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend
from kakehashi.errors import ModelLoadError
from kakehashi.tasks.heads import (
    End2EndHead,
    Head,
    ObjectnessHead,
    TfObjectDetectionHead,
    UltralyticsHead,
    grid_anchor_count,
)
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import ModelFacts, numbered_names

log = logging.getLogger(__name__)

TF_OD = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")  # TF-OD's output roles
Dims = Callable[[], tuple[int, int]]


def detection_head(facts: ModelFacts, extra: int, protos: str | None = None) -> tuple[Head, tuple[str, ...]]:
    """The model's detection head and class names (numbered when none are known); `extra` columns follow each
    detection's class scores (mask coefficients or keypoint values), `protos` names a mask prototype output."""
    dims = functools.cache(lambda: output_dims(facts.backend, facts.probe))
    head = _resolve_head(facts, dims, extra, protos)
    return head, facts.names or numbered_names(_class_count(head, dims, extra))


def _resolve_head(facts: ModelFacts, dims: Dims, extra: int, protos: str | None) -> Head:
    head, tf_od, backend, path = facts.head, facts.tf_od, facts.backend, facts.path
    if head == "tf-od" or (head is None and tf_od):
        missing = [role for role in TF_OD[:3] if role not in tf_od]
        if missing:
            raise ModelLoadError(f"{path}: head 'tf-od' needs outputs named {', '.join(missing)}")
        return TfObjectDetectionHead(
            tf_od["detection_boxes"], tf_od["detection_scores"], tf_od["detection_classes"], tf_od.get("num_detections")
        )
    boxes = [s for s in backend.outputs if len(s.shape) == 3]
    if len(boxes) != 1 or len(backend.outputs) != 1 + (protos is not None):
        raise ModelLoadError(
            f"{path}: a detection head needs one output [N, a, b] (and, to segment, prototypes [N, c, h, w]); "
            f"the model's outputs are {[s.to_json() for s in backend.outputs]}"
        )
    output = boxes[0].name
    if head is None:
        head = _guess_head(facts.meta, facts.image_input, dims, extra, path)
        log.info("%s: inferred detection head '%s'", path, head)
    if head == "ultralytics":
        return UltralyticsHead(output, extra)
    if head == "end2end":
        return End2EndHead(output, extra)
    return ObjectnessHead(output, grid=head == "yolox", name=head)


def _guess_head(meta: dict, image_input: ImageInput, dims: Dims, extra: int, path: Path) -> str:
    if "end2end" in meta:  # recent Ultralytics exports say which head they have
        return "end2end" if meta["end2end"] is True else "ultralytics"
    rows, cols = dims()
    anchors = grid_anchor_count(image_input.size)
    if rows == anchors:
        return "yolox"
    if rows == 3 * anchors:
        return "yolov5"
    if rows < cols:
        return "ultralytics"
    if cols in (6 + extra, 7 + extra):
        return "end2end"
    raise ModelLoadError(
        f"{path}: cannot tell the detection head from output shape [N, {rows}, {cols}]; "
        f"set 'head' in model.yaml (ultralytics, end2end, yolov5, yolox or tf-od)"
    )


def output_dims(backend: Backend, probe: Callable[[], dict[str, np.ndarray]]) -> tuple[int, int]:
    """Rows and columns of the (one) rank-3 detection output, probing the model if they are dynamic."""
    spec = next(s for s in backend.outputs if len(s.shape) == 3)
    if all(d > 0 for d in spec.shape[1:]):
        return spec.shape[1], spec.shape[2]
    shape = probe()[spec.name].shape
    return shape[1], shape[2]


def _class_count(head: Head, dims: Dims, extra: int) -> int:
    if isinstance(head, TfObjectDetectionHead):
        return 0
    rows, cols = dims()
    if isinstance(head, UltralyticsHead):
        return rows - 4 - extra
    if isinstance(head, ObjectnessHead):
        return cols - 5
    return 0
