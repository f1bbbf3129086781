"""Detection heads: decode one image's raw outputs into boxes (xyxy, model-input pixels), scores, classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from kakehashi.tasks.nms import batched_nms
from kakehashi.tasks.params import PredictParams

MAX_NMS = 30000  # candidates kept before NMS, as in Ultralytics
YOLOX_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Detections:
    """Boxes (n, 4) xyxy in model-input pixels, scores (n,), class indices (n,), best first; `extra` (n, e) holds
    each detection's task columns after the class scores (mask coefficients, keypoints), if the head has any."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    extra: np.ndarray | None = None


class Head(Protocol):
    @property
    def name(self) -> str: ...

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int], params: PredictParams) -> Detections:
        """`outputs` are one image's tensors (batch dimension removed); `size` is the input (h, w)."""
        ...


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xyxy = np.empty_like(xywh)
    half = xywh[:, 2:4] / 2
    xyxy[:, :2] = xywh[:, :2] - half
    xyxy[:, 2:] = xywh[:, :2] + half
    return xyxy


Suppress = Callable[[np.ndarray, np.ndarray, np.ndarray, float, int], np.ndarray]


def select(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    params: PredictParams,
    suppress: Suppress | None,
    extra: np.ndarray | None = None,
) -> Detections:
    """Confidence and class filter, then (if given) class-aware NMS `suppress` (axis-aligned `batched_nms`, or
    `rotated_nms` for oriented boxes); at most `max_det`, best first. `boxes` keep whatever columns they have."""
    mask = scores > params.conf
    if params.classes is not None:
        mask &= np.isin(classes, list(params.classes))
    index = np.flatnonzero(mask)
    boxes, scores, classes = boxes[index], scores[index], classes[index]
    if suppress is not None:
        if scores.size > MAX_NMS:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS]
            boxes, scores, classes, index = boxes[top], scores[top], classes[top], index[top]
        keep = suppress(boxes, scores, classes, params.iou, params.max_det)
    else:
        keep = np.argsort(-scores, kind="stable")[: params.max_det]
    return Detections(
        boxes[keep].astype(np.float32),
        scores[keep].astype(np.float32),
        classes[keep].astype(np.int64),
        None if extra is None else extra[index[keep]],
    )


@dataclass(frozen=True)
class UltralyticsHead:
    """YOLOv8/YOLO11 raw head `[4 + nc + extra, N]`: cx, cy, w, h, one score per class, then `extra` task columns
    (32 mask coefficients for segment, keypoints for pose); needs NMS."""

    output: str
    extra: int = 0
    name: str = "ultralytics"

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int], params: PredictParams) -> Detections:
        pred = outputs[self.output]
        class_scores = pred[4 : pred.shape[0] - self.extra]
        classes = class_scores.argmax(0)
        scores = np.take_along_axis(class_scores, classes[None], 0)[0]
        candidates = scores > params.conf
        boxes = _xywh_to_xyxy(pred[:4, candidates].T)
        extra = pred[pred.shape[0] - self.extra :, candidates].T if self.extra else None
        return select(boxes, scores[candidates], classes[candidates], params, suppress=batched_nms, extra=extra)


@dataclass(frozen=True)
class End2EndHead:
    """NMS-free head `[N, 6 + extra]`: x1, y1, x2, y2, score, class, then `extra` task columns (YOLO26 default
    export, YOLOv10)."""

    output: str
    extra: int = 0
    name: str = "end2end"

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int], params: PredictParams) -> Detections:
        pred = outputs[self.output]
        extra = pred[:, 6 : 6 + self.extra] if self.extra else None
        return select(pred[:, :4], pred[:, 4], pred[:, 5].astype(np.int64), params, suppress=None, extra=extra)


@lru_cache(maxsize=16)
def _yolox_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell offsets (N, 2) and strides (N, 1) for YOLOX's raw outputs at this input size."""
    grids, strides = [], []
    for stride in YOLOX_STRIDES:
        ys, xs = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def grid_anchor_count(size: tuple[int, int]) -> int:
    """Number of grid cells over strides 8/16/32 for an input of `size` (YOLOX and YOLOv8 anchor count)."""
    return sum((size[0] // s) * (size[1] // s) for s in YOLOX_STRIDES)


@dataclass(frozen=True)
class ObjectnessHead:
    """YOLOv5 `[N, 5 + nc]` (cx, cy, w, h, objectness, class scores); YOLOX raw grid outputs when `grid`."""

    output: str
    grid: bool = False
    name: str = "yolov5"

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int], params: PredictParams) -> Detections:
        pred = outputs[self.output]
        objectness = pred[:, 4]
        candidates = objectness > params.conf
        pred = pred[candidates]
        xywh = pred[:, :4].copy()
        if self.grid:
            cells, strides = _yolox_grid(*size)
            xywh[:, :2] = (xywh[:, :2] + cells[candidates]) * strides[candidates]
            xywh[:, 2:] = np.exp(xywh[:, 2:]) * strides[candidates]
        class_scores = pred[:, 5:] * pred[:, 4:5]
        classes = class_scores.argmax(1)
        scores = class_scores[np.arange(len(classes)), classes]
        return select(_xywh_to_xyxy(xywh), scores, classes, params, suppress=batched_nms)


@dataclass(frozen=True)
class TfObjectDetectionHead:
    """TF Object Detection API outputs: normalised y1, x1, y2, x2 boxes, scores, 1-based label-map classes."""

    boxes: str
    scores: str
    classes: str
    num_detections: str | None
    name: str = "tf-od"

    def decode(self, outputs: dict[str, np.ndarray], size: tuple[int, int], params: PredictParams) -> Detections:
        count = int(outputs[self.num_detections]) if self.num_detections else len(outputs[self.scores])
        height, width = size
        yxyx = outputs[self.boxes][:count]
        boxes = np.stack([yxyx[:, 1] * width, yxyx[:, 0] * height, yxyx[:, 3] * width, yxyx[:, 2] * height], 1)
        classes = outputs[self.classes][:count].astype(np.int64) - 1
        return select(boxes, outputs[self.scores][:count], classes, params, suppress=None)
