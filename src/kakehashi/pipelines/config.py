"""`pipeline.yaml`: the steps of a pipeline over other models of the repository, each key optional but `detect`.

```yaml
detect: {model: yolo26n, version: 1}        # the detector (version: the newest ready one if not given)
tile: {size: 640, overlap: 0.2, iou: 0.5}    # optional: detect per tile of a large image, merge with NMS
crop: {classes: [0, 2], pad: 0.1, min_size: 16}  # which detections are classified, and how they are cut
classify: {model: sku-classifier, top_k: 3}  # optional: each chosen detection gets its crop's top classes
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kakehashi.repository.yaml_file import load_yaml_file

PIPELINE_FILE = "pipeline.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Member(_Strict):
    """A model of the repository that a step runs on."""

    model: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1)


class TileStep(_Strict):
    """Cut the image into `size` × `size` tiles overlapping by `overlap` (a fraction of the tile), detect in each,
    and merge the detections of all tiles with class-aware NMS at `iou`."""

    size: int = Field(default=640, ge=32, le=16384)
    overlap: float = Field(default=0.2, ge=0.0, lt=1.0)
    iou: float = Field(default=0.5, ge=0.0, le=1.0)


class CropStep(_Strict):
    """Which detections are classified (`classes`: all if not given, `min_size`: both sides at least this many
    pixels), and the margin added round each box (`pad`: a fraction of its width and height)."""

    classes: frozenset[int] | None = None
    pad: float = Field(default=0.0, ge=0.0, le=1.0)
    min_size: int = Field(default=1, ge=1)


class ClassifyStep(Member):
    """The classifier each crop goes to; `top_k` classes per detection."""

    top_k: int = Field(default=5, ge=1, le=1000)


class PipelineConfig(_Strict):
    detect: Member
    tile: TileStep | None = None
    crop: CropStep | None = None
    classify: ClassifyStep | None = None

    @model_validator(mode="after")
    def _crop_feeds_a_classifier(self) -> PipelineConfig:
        if self.crop is not None and self.classify is None:
            raise ValueError("'crop' chooses what 'classify' sees: add a 'classify' step, or remove 'crop'")
        return self

    @property
    def members(self) -> list[Member]:
        return [self.detect, *([self.classify] if self.classify else [])]


def load_pipeline_config(path: Path) -> PipelineConfig:
    return load_yaml_file(path, PipelineConfig)
