"""How closely a model's answers at one precision (bf16, int8…) agree with its answers at f32.

Detections: every f32 detection at or above the confidence threshold must have a counterpart of the same class
(box IoU ≥ `box_iou`, confidence within `confidence`) among the other precision's answers, and every detection of
theirs at or above the threshold one among f32's. Both sides are decoded at the threshold lowered by `confidence`,
so a detection that only crosses the threshold by less than the tolerance is a counterpart, not a loss. Rotated
boxes are compared by their upright bounds. Classifiers: the same top-1 class, its confidence within `confidence`.
Raw tensors: every output within `output` of f32's, relative to f32's largest magnitude (integer outputs equal).
A check with nothing to compare (no detection on any calibration image) refuses the precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# a check that found nothing to compare proves nothing: the precision is refused
NOTHING_COMPARED = (
    "nothing to compare: the model finds nothing on the calibration images (name a folder of its own images in "
    "agreement.images)"
)


@dataclass(frozen=True)
class Tolerances:
    box_iou: float = 0.9  # the least IoU between a detection's boxes at the two precisions
    confidence: float = 0.1  # the most a detection's (or top-1 class's) confidence may move
    output: float = 0.02  # raw tensors: the most an output may move, relative to f32's largest magnitude


@dataclass
class Agreement:
    """What a comparison found: how much was compared, the worst differences, and what disagreed."""

    compared: int = 0  # what was compared
    unit: str = "detections"  # what `compared` counts: detections, images (a classifier's) or outputs (tensors)
    least_iou: float = 1.0
    largest_confidence_change: float = 0.0
    largest_output_change: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line for the log, the model's configuration and the web page."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"disagrees with f32: {self.problems[0]}{more}"
        if self.unit == "outputs":
            return f"agrees with f32: {self.compared} outputs within {self.largest_output_change:.3g} (relative)"
        if self.unit == "images":
            return (
                f"agrees with f32: the same top-1 class on {self.compared} images, largest confidence change "
                f"{self.largest_confidence_change:.3f}"
            )
        return (
            f"agrees with f32: {self.compared} detections, least box IoU {self.least_iou:.3f}, "
            f"largest confidence change {self.largest_confidence_change:.3f}"
        )


def _upright(box: dict) -> dict:
    """A box's upright bounds (a rotated box's four corners give theirs)."""
    if "x3" not in box:
        return box
    xs, ys = [box[f"x{i}"] for i in range(1, 5)], [box[f"y{i}"] for i in range(1, 5)]
    return {"x1": min(xs), "y1": min(ys), "x2": max(xs), "y2": max(ys)}


def box_iou(a: dict, b: dict) -> float:
    """Intersection over union of two boxes `{x1, y1, x2, y2}` (rotated ones by their upright bounds)."""
    a, b = _upright(a), _upright(b)
    x1, y1 = max(a["x1"], b["x1"]), max(a["y1"], b["y1"])
    x2, y2 = min(a["x2"], b["x2"]), min(a["y2"], b["y2"])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area_a = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"])
    area_b = (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return inter / (area_a + area_b - inter) if inter else 0.0


def _describe(result: dict) -> str:
    return f"{result.get('name', result['class'])} {result['confidence']:.2f}"


def best_counterpart(result: dict, others: Sequence[dict]) -> tuple[dict | None, float]:
    """The detection of the same class in `others` whose box overlaps `result`'s most, and that IoU."""
    best, best_iou = None, 0.0
    for other in others:
        if other["class"] == result["class"]:
            iou = box_iou(result["box"], other["box"])
            if best is None or iou > best_iou:
                best, best_iou = other, iou
    return best, best_iou


def compare_detections(
    reference: Sequence[Sequence[dict]],
    candidate: Sequence[Sequence[dict]],
    threshold: float,
    tolerances: Tolerances,
    labels: Sequence[str],
) -> Agreement:
    """Detections of each image (`labels` names the images), both decoded at `threshold - tolerances.confidence`."""
    found = Agreement()
    for label, ours, theirs in zip(labels, reference, candidate):
        for side, results, others in (("lost", ours, theirs), ("added", theirs, ours)):
            for result in results:
                if result["confidence"] < threshold:
                    continue
                other, iou = best_counterpart(result, others)
                if other is None or iou < tolerances.box_iou:
                    nearest = f" (nearest box at IoU {iou:.3f})" if iou > 0 else ""
                    found.problems.append(f"{side} {_describe(result)} on {label}{nearest}")
                    continue
                if side == "added":
                    continue  # a pair found from both sides is measured once
                change = abs(other["confidence"] - result["confidence"])
                if change > tolerances.confidence:
                    found.problems.append(f"{_describe(result)} became {other['confidence']:.2f} on {label}")
                found.compared += 1
                found.least_iou = min(found.least_iou, iou)
                found.largest_confidence_change = max(found.largest_confidence_change, change)
    if not found.compared and not found.problems:
        found.problems.append(NOTHING_COMPARED)
    return found


def compare_top1(
    reference: Sequence[Sequence[dict]],
    candidate: Sequence[Sequence[dict]],
    tolerances: Tolerances,
    labels: Sequence[str],
) -> Agreement:
    """A classifier's answers (top-k, best first) on each image: the same top-1 class, a close confidence."""
    found = Agreement(unit="images")
    for label, ours, theirs in zip(labels, reference, candidate):
        if not ours or not theirs:
            continue
        found.compared += 1
        if ours[0]["class"] != theirs[0]["class"]:
            found.problems.append(f"top-1 {_describe(ours[0])} became {_describe(theirs[0])} on {label}")
            continue
        change = abs(ours[0]["confidence"] - theirs[0]["confidence"])
        if not math.isfinite(change):
            change = math.inf
        found.largest_confidence_change = max(found.largest_confidence_change, change)
        if change > tolerances.confidence:
            found.problems.append(f"top-1 {_describe(ours[0])} became {theirs[0]['confidence']:.2f} on {label}")
    if not found.compared:
        found.problems.append(NOTHING_COMPARED)
    return found


def compare_outputs(
    reference: Sequence[dict[str, np.ndarray]], candidate: Sequence[dict[str, np.ndarray]], tolerances: Tolerances
) -> Agreement:
    """Raw outputs, name by name: the largest change relative to f32's largest magnitude."""
    found = Agreement(unit="outputs")
    for ours, theirs in zip(reference, candidate):
        for name, expected in ours.items():
            expected = np.asarray(expected, np.float64)
            got = np.asarray(theirs[name], np.float64)
            found.compared += 1
            if expected.shape != got.shape:
                found.problems.append(f"output {name!r} has shape {got.shape}, f32's {expected.shape}")
                continue
            if theirs[name].dtype.kind in "iub" and not np.array_equal(theirs[name], ours[name]):
                found.problems.append(f"output {name!r} (integers) differs")
                continue
            scale = float(np.abs(expected).max(initial=0.0)) or 1.0
            change = float(np.abs(got - expected).max(initial=0.0)) / scale
            if not np.isfinite(change):
                change = float("inf")
            found.largest_output_change = max(found.largest_output_change, change)
            if change > tolerances.output:
                found.problems.append(f"output {name!r} moved by {change:.3g} of its largest value")
    return found
