"""Per-request parameters for image tasks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictParams:
    """What a predict request asks for; unset values come from the model's `defaults`."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: frozenset[int] | None = None
    imgsz: tuple[int, int] | None = None
    top_k: int = 5
    decimals: int = 5
    masks: str = "polygon"  # segmentation: polygon (`segments`) or rle (exact pixels, COCO run lengths)
