"""Greedy non-maximum suppression in numpy (same rule as torchvision: drop IoU > threshold)."""

from __future__ import annotations

import numpy as np

MAX_WH = 7680.0  # class offset for class-aware NMS, as in Ultralytics


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Indices of the boxes (xyxy) kept, highest score first, at most `max_keep` of them."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = (np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])).clip(0)
        height = (np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])).clip(0)
        inter = width * height
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                max_keep: int) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    offsets = classes.astype(boxes.dtype)[:, None] * MAX_WH
    return nms(boxes + offsets, scores, iou_threshold, max_keep)
