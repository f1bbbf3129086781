"""The predict endpoint's parameters (query string or form fields): one model validates them and documents them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from kakehashi.repository.config import Defaults
from kakehashi.tasks.params import PredictParams

Size = Annotated[int, Field(ge=32, le=8192)]
ClassIndex = Annotated[int, Field(ge=0, le=1_000_000)]
TIMEOUT_MS_MAX = 3_600_000.0


class PredictQuery(BaseModel):
    """What a predict request may ask for; a parameter left out takes the model's default (`model.yaml`
    `defaults`) or the one given here. Lists are written `0,2` (or `0 2`, `[0, 2]`, or the name repeated)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)

    conf: float | None = Field(None, ge=0.0, le=1.0, description="Confidence threshold (model default, 0.25).")
    iou: float | None = Field(None, ge=0.0, le=1.0, description="NMS IoU threshold (model default, 0.7).")
    imgsz: list[Size] | None = Field(
        None,
        min_length=1,
        max_length=2,
        description="Input size, `640` or `height,width` (dynamic-shape models only).",
    )
    max_det: int | None = Field(None, ge=1, le=10_000, description="Most detections per image (model default, 300).")
    classes: list[ClassIndex] | None = Field(None, min_length=1, description="Only these class indices, e.g. `0,2`.")
    decimals: int = Field(5, ge=0, le=10, description="Decimal places in the answer.")
    top_k: int | None = Field(None, ge=1, le=1000, description="Classes per image, classifiers (model default, 5).")
    masks: Literal["polygon", "rle"] = Field(
        "polygon",
        description="Segmentation masks as outlines (`segments`) or as COCO run lengths (`rle`, exact pixels).",
    )
    timeout: float | None = Field(
        None, ge=1.0, le=TIMEOUT_MS_MAX, description="Deadline in milliseconds (504 past it)."
    )

    def params(self, defaults: Defaults) -> PredictParams:
        """The task's parameters: these values over the model's defaults."""
        return PredictParams(
            conf=defaults.conf if self.conf is None else self.conf,
            iou=defaults.iou if self.iou is None else self.iou,
            max_det=defaults.max_det if self.max_det is None else self.max_det,
            classes=None if self.classes is None else frozenset(self.classes),
            imgsz=None if self.imgsz is None else (self.imgsz[0], self.imgsz[-1]),
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            decimals=self.decimals,
            masks=self.masks,
        )


def _present(schema: dict) -> dict:
    """A field's schema as a query parameter: `X | None` is X (in a query string, None is an absent parameter)."""
    kinds = [kind for kind in schema.get("anyOf", ()) if kind.get("type") != "null"]
    if len(kinds) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**kinds[0], **rest}


QUERY_SCHEMAS: dict[str, dict] = {
    name: _present(schema) for name, schema in PredictQuery.model_json_schema()["properties"].items()
}
"""Each parameter's JSON schema, as the OpenAPI document states it and as error messages describe it."""
