"""Work out, once at load, what a model is: its task, head, class names and how to build its input.

Sources in order: `model.yaml`, the metadata Ultralytics writes into its exports, then the graph's shapes.
"""

from __future__ import annotations

import ast
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.errors import ModelLoadError
from kakehashi.repository.config import ModelConfig
from kakehashi.tasks.classify import ClassifyTask
from kakehashi.tasks.detect import DetectTask
from kakehashi.tasks.heads import (
    End2EndHead,
    Head,
    ObjectnessHead,
    TfObjectDetectionHead,
    UltralyticsHead,
    grid_anchor_count,
)
from kakehashi.tasks.obb import ObbTask
from kakehashi.tasks.pose import PoseTask
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.segment import SegmentTask

log = logging.getLogger(__name__)

ImageTask = DetectTask | ClassifyTask | SegmentTask | PoseTask | ObbTask
BOX_TASKS = ("detect", "segment", "pose")
_DTYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8"}
_TF_OD = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
_DEFAULT_SIZE = 640
_TF_OD_SIZE = 300


_MAX_METADATA_CHARS = 1_000_000


def ultralytics_metadata(metadata: dict[str, str]) -> dict[str, object]:
    """The Python-literal values Ultralytics writes (`names`, `imgsz`, `stride`, `task`, `end2end`…).

    Parsed as data only (`ast.literal_eval`: literals, never calls or names); a value that is not a literal,
    is too deeply nested or too long stays the raw string, which the callers then ignore.
    """
    parsed: dict[str, object] = {}
    for key in ("names", "imgsz", "stride", "task", "end2end", "kpt_shape", "batch"):
        if key in metadata:
            value = metadata[key]
            try:
                parsed[key] = ast.literal_eval(value) if len(value) <= _MAX_METADATA_CHARS else value
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                parsed[key] = value
    return parsed


def _names(raw: object) -> tuple[str, ...] | None:
    """Class names from a list, or from a dict of class index → name (gaps named by their index)."""
    if isinstance(raw, (list, tuple)):
        return tuple(str(v) for v in raw)
    if isinstance(raw, dict) and raw and all(isinstance(k, int) and 0 <= k < 100_000 for k in raw):
        return tuple(str(raw.get(i, i)) for i in range(max(raw) + 1))
    if raw is not None:
        log.warning("ignoring class names that are not a list or a {index: name} dict: %.80r", raw)
    return None


def _tf_od_outputs(outputs: list[TensorSpec]) -> dict[str, str]:
    """Map TF-OD role → output name, e.g. `detection_boxes` → `detection_boxes:0`."""
    found = {}
    for spec in outputs:
        base = spec.name.split(":")[0].split("/")[-1]
        if base in _TF_OD:
            found[base] = spec.name
    return found


def _image_input(backend: Backend, config: ModelConfig) -> tuple[TensorSpec, str] | None:
    """The single image input and its layout, or None if the model does not take one image tensor."""
    if len(backend.inputs) != 1 or len(backend.inputs[0].shape) != 4:
        return None
    spec = backend.inputs[0]
    if config.input.layout:
        return spec, config.input.layout
    if spec.shape[1] == 3:
        return spec, "nchw"
    if spec.shape[3] == 3:
        return spec, "nhwc"
    return None


def resolve_task(backend: Backend, config: ModelConfig, path: Path) -> ImageTask | None:
    """The image task this model serves, or None for a raw-tensor model (served over OIP v2 only)."""
    meta = ultralytics_metadata(backend.metadata)
    names = config.names or _names(meta.get("names")) or ()
    tf_od = _tf_od_outputs(backend.outputs)
    task = config.task or ("detect" if tf_od else None) or meta.get("task")
    if task == "tensor":
        return None
    if task not in (None, "classify", "obb", *BOX_TASKS):
        log.warning("%s: task '%s' is not supported yet; serving raw tensors only", path, task)
        return None
    found = _image_input(backend, config)
    if found is None:
        if config.task:
            raise ModelLoadError(
                f"{path}: task '{config.task}' needs one image input [N, 3, H, W] or [N, H, W, 3]; "
                f"the model's inputs are {[s.to_json() for s in backend.inputs]}"
            )
        return None
    input_spec, layout = found
    if task is None:
        task = _guess_task(backend.outputs)
        if task is None:
            return None
    image_input = _resolve_input(
        input_spec, layout, config, meta, task, head_hint=config.head or ("tf-od" if tf_od else None), path=path
    )
    if task == "classify":
        output = backend.outputs[0].name
        return ClassifyTask(image_input, output, names or _numbered(_probe(backend, image_input)[output].shape[-1]))
    probe = functools.cache(lambda: _probe(backend, image_input))  # runs the model at most once
    if task == "obb":
        if meta.get("end2end") is True or config.head == "end2end":
            raise ModelLoadError(
                f"{path}: end-to-end oriented-box heads are not supported yet; export with "
                f"end2end=False (the raw head [N, 4 + classes + 1, anchors], rotated NMS here)"
            )
        if len(backend.outputs) != 1 or len(backend.outputs[0].shape) != 3:
            raise ModelLoadError(f"{path}: task 'obb' needs one output [N, 4 + classes + 1, anchors]")
        output = backend.outputs[0].name
        return ObbTask(image_input, output, names or _numbered(_output_dims(backend, probe)[0] - 5))
    protos = next((s.name for s in backend.outputs if len(s.shape) == 4), None) if task == "segment" else None
    if task == "segment" and protos is None:
        raise ModelLoadError(
            f"{path}: task 'segment' needs a prototype output [N, c, h, w]; the model's outputs "
            f"are {[s.to_json() for s in backend.outputs]}"
        )
    kpt_shape = _kpt_shape(config, meta, path) if task == "pose" else None
    extra = _extra_columns(protos, probe, kpt_shape)
    dims = functools.cache(lambda: _output_dims(backend, probe))
    head = _resolve_head(backend, config, meta, tf_od, image_input, dims, extra, protos, path)
    if not names:
        names = _numbered(_class_count(head, dims, extra))
    if task == "segment" and protos is not None:
        return SegmentTask(image_input, head, names, protos)
    if task == "pose" and kpt_shape is not None:
        return PoseTask(image_input, head, names, kpt_shape)
    return DetectTask(image_input, head, names)


def _kpt_shape(config: ModelConfig, meta: dict, path: Path) -> tuple[int, int]:
    if config.kpt_shape:
        return config.kpt_shape
    shape = meta.get("kpt_shape")
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == 2
        and shape[1] in (2, 3)
        and all(isinstance(v, int) and v > 0 for v in shape)
    ):
        raise ModelLoadError(
            f"{path}: task 'pose' needs 'kpt_shape' [keypoints, 2 or 3] in model.yaml or the "
            f"model's metadata; got {shape!r}"
        )
    return int(shape[0]), int(shape[1])


def _extra_columns(protos: str | None, probe: Callable, kpt_shape: tuple[int, int] | None) -> int:
    """How many columns after the class scores each detection has: mask coefficients or keypoint values."""
    if protos is not None:
        return int(probe()[protos].shape[1])
    if kpt_shape is not None:
        return kpt_shape[0] * kpt_shape[1]
    return 0


def _numbered(count: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(count))


def _guess_task(outputs: list[TensorSpec]) -> str | None:
    ranks = sorted(len(s.shape) for s in outputs)
    if ranks == [2]:
        return "classify"
    if ranks == [3]:
        return "detect"
    if ranks == [3, 4]:
        return "segment"
    return None


def _resolve_input(
    spec: TensorSpec, layout: str, config: ModelConfig, meta: dict, task: str, head_hint: str | None, path: Path
) -> ImageInput:
    spatial = spec.shape[2:4] if layout == "nchw" else spec.shape[1:3]
    graph_size = tuple(spatial) if all(d > 0 for d in spatial) else None
    meta_size = meta.get("imgsz")
    if isinstance(meta_size, int):
        meta_size = (meta_size, meta_size)
    default = _TF_OD_SIZE if head_hint == "tf-od" else _DEFAULT_SIZE
    size = config.input.size or graph_size or (tuple(meta_size) if meta_size else None) or (default, default)
    if graph_size and tuple(size) != graph_size:
        raise ModelLoadError(
            f"{path}: key 'input.size' is {list(size)} but the graph's input '{spec.name}' is fixed at "
            f"{list(graph_size)} (height, width)"
        )
    dtype = config.input.dtype or _DTYPES.get(spec.datatype)
    if dtype is None:
        raise ModelLoadError(
            f"{path}: input '{spec.name}' is {spec.datatype}; image inputs must be FP32, FP16 or UINT8"
        )
    if config.input.resize:
        resize = config.input.resize
    else:
        resize = "crop" if task == "classify" else ("stretch" if head_hint == "tf-od" else "letterbox")
    stride = meta.get("stride")
    return ImageInput(
        name=spec.name,
        size=(int(size[0]), int(size[1])),
        dynamic_size=graph_size is None,
        stride=int(stride) if isinstance(stride, int) and stride > 0 else 32,
        resize=resize,
        pad_value=config.input.pad_value,
        channels=config.input.channels,
        layout=layout,
        dtype=dtype,
        scale=config.input.scale if config.input.scale is not None else (1.0 if dtype == "uint8" else 1 / 255),
        mean=config.input.mean,
        std=config.input.std,
    )


def _probe(backend: Backend, image_input: ImageInput) -> dict[str, np.ndarray]:
    """Run the model once on a blank image to learn its concrete output shapes."""
    shape = (1, *image_input.tensor_shape(image_input.size))
    blank = np.zeros(shape, dtype=np.dtype(image_input.dtype))
    return backend.run({image_input.name: blank})


Dims = Callable[[], tuple[int, int]]


def _resolve_head(
    backend: Backend,
    config: ModelConfig,
    meta: dict,
    tf_od: dict[str, str],
    image_input: ImageInput,
    dims: Dims,
    extra: int,
    protos: str | None,
    path: Path,
) -> Head:
    head = config.head
    if head == "tf-od" or (head is None and tf_od):
        missing = [role for role in _TF_OD[:3] if role not in tf_od]
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
        head = _guess_head(meta, image_input, dims, extra, path)
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


def _output_dims(backend: Backend, probe: Callable[[], dict[str, np.ndarray]]) -> tuple[int, int]:
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
