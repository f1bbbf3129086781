"""The predict endpoint's answer, per task kind: the models the OpenAPI document states it with and the tests check
real answers against (answers are written by `vision.encode_predictions` with orjson, never through these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Strict):
    """An axis-aligned box in the original image's pixels."""

    x1: float
    y1: float
    x2: float
    y2: float


class Corners(_Strict):
    """An oriented box's four corners in the original image's pixels, in Ultralytics' order."""

    x1: float
    y1: float
    x2: float
    y2: float
    x3: float
    y3: float
    x4: float
    y4: float


class Outline(_Strict):
    """A mask's outline (`masks=polygon`): its points' x and y in the original image's pixels."""

    x: list[float]
    y: list[float]


class RunLengths(_Strict):
    """A mask as COCO's uncompressed run lengths over the whole image (`masks=rle`): column-major, starting with
    a run of zeros."""

    size: list[int] = Field(min_length=2, max_length=2, description="The image's height and width.")
    counts: list[int]


class Keypoints(_Strict):
    """A pose's keypoints in the original image's pixels; `visible` is each one's confidence (1 if the model
    gives none)."""

    x: list[float]
    y: list[float]
    visible: list[float]


class Classification(_Strict):
    """A class the model found (a classifier's top-k, or what each detection below also carries)."""

    class_: int = Field(alias="class", description="The class index.")
    name: str
    confidence: float


class Detection(Classification):
    box: Box
    classification: list[Classification] | None = Field(
        default=None, description="With a pipeline's classify step: the top classes of the detection's crop."
    )


class Segmentation(Detection):
    segments: Outline


class SegmentationRunLengths(Detection):
    rle: RunLengths


class Pose(Detection):
    keypoints: Keypoints


class OrientedDetection(Classification):
    box: Corners


Result = Detection | Segmentation | SegmentationRunLengths | Pose | OrientedDetection | Classification


class Speed(_Strict):
    """Where one image's time went, in milliseconds: a model's `preprocess`, `queue`, `inference` and
    `postprocess`; a pipeline's `preprocess` (decoding), `detect` and `classify`."""

    preprocess: float
    queue: float | None = None
    inference: float | None = None
    postprocess: float | None = None
    detect: float | None = None
    classify: float | None = None


class ImageAnswer(_Strict):
    shape: list[int] = Field(min_length=2, max_length=2, description="The original image's height and width.")
    results: list[Result] = Field(description="Best first; what each result holds depends on the model's task.")
    speed: Speed


class AnswerMetadata(_Strict):
    model: str
    version: str
    image_count: int = Field(alias="imageCount")


class Predictions(_Strict):
    """The predict endpoint's answer: one object per image, in the order they were sent."""

    images: list[ImageAnswer]
    metadata: AnswerMetadata
