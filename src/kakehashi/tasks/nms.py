"""Greedy non-maximum suppression in numpy (same rule as torchvision: drop IoU > threshold), for axis-aligned
and rotated boxes."""

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


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_keep: int
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    offsets = classes.astype(boxes.dtype)[:, None] * MAX_WH
    return nms(boxes + offsets, scores, iou_threshold, max_keep)


def _covariance(rboxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each rotated box (cx, cy, w, h, angle) as a 2-D Gaussian: the entries a, b, c of its covariance matrix."""
    a, b = rboxes[:, 2] ** 2 / 12, rboxes[:, 3] ** 2 / 12
    cos, sin = np.cos(rboxes[:, 4]), np.sin(rboxes[:, 4])
    return a * cos**2 + b * sin**2, a * sin**2 + b * cos**2, (a - b) * cos * sin


def probiou(box: np.ndarray, others: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Probabilistic IoU of one rotated box with each of `others` (1 - Hellinger distance of their Gaussians,
    the measure Ultralytics uses for oriented boxes)."""
    a1, b1, c1 = (v[0] for v in _covariance(box[None]))
    a2, b2, c2 = _covariance(others)
    dx, dy = box[0] - others[:, 0], box[1] - others[:, 1]
    a, b, c = a1 + a2, b1 + b2, c1 + c2
    denominator = a * b - c**2 + eps
    t1 = (a * dy**2 + b * dx**2) / denominator * 0.25
    t2 = (c * -dx * dy) / denominator * 0.5
    spread = np.sqrt(max(a1 * b1 - c1**2, 0.0) * np.clip(a2 * b2 - c2**2, 0, None))
    t3 = 0.5 * np.log(denominator / (4 * spread + eps) + eps)
    distance = np.clip(t1 + t2 + t3, eps, 100.0)
    return 1 - np.sqrt(1 - np.exp(-distance) + eps)


def rotated_nms(
    rboxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_keep: int
) -> np.ndarray:
    """Class-aware greedy NMS of rotated boxes (cx, cy, w, h, angle) by probabilistic IoU; best first."""
    shifted = rboxes.astype(np.float64).copy()
    shifted[:, :2] += classes[:, None] * MAX_WH
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[probiou(shifted[best], shifted[rest]) <= iou_threshold] if rest.size else rest
    return np.asarray(keep, dtype=np.int64)
