"""Work out, once at load, what a model is: its task, head, class names and how to build its input.

Sources in order: `model.yaml`, the metadata Ultralytics writes into its exports, then the graph's shapes. The
task itself is built by the registered task of that name (`tasks.registry`).
"""

from __future__ import annotations

import ast
import functools
import logging
from pathlib import Path

import numpy as np

from kakehashi.backends.base import Backend, TensorSpec
from kakehashi.errors import ModelLoadError
from kakehashi.tasks.detection_head import TF_OD
from kakehashi.tasks.preprocess import ImageInput
from kakehashi.tasks.registry import RAW_TENSORS, ImageTask, ModelFacts, task_choices, task_named
from kakehashi.tasks.settings import TaskSettings

log = logging.getLogger(__name__)

_DTYPES = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8"}
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
        if base in TF_OD:
            found[base] = spec.name
    return found


def _image_input(backend: Backend, config: TaskSettings) -> tuple[TensorSpec, str] | None:
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


def resolve_task(backend: Backend, config: TaskSettings, path: Path) -> ImageTask | None:
    """The image task this model serves, or None for a raw-tensor model (served over OIP v2 only)."""
    meta = ultralytics_metadata(backend.metadata)
    names = config.names or _names(meta.get("names")) or ()
    tf_od = _tf_od_outputs(backend.outputs)
    task = config.task or ("detect" if tf_od else None) or meta.get("task")
    if task == RAW_TENSORS:
        return None
    if task is not None and task not in task_choices():
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
    kind = task_named(str(task))
    head_hint = config.head or ("tf-od" if tf_od else None)
    image_input = _resolve_input(input_spec, layout, config, meta, kind.default_resize, head_hint, path)
    probe = functools.cache(lambda: _probe(backend, image_input))  # runs the model at most once
    facts = ModelFacts(backend, image_input, names, meta, tf_od, config.head, config.kpt_shape, path, probe)
    return kind.build(facts)


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
    spec: TensorSpec,
    layout: str,
    config: TaskSettings,
    meta: dict,
    default_resize: str,
    head_hint: str | None,
    path: Path,
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
    resize = config.input.resize or ("stretch" if head_hint == "tf-od" else default_resize)
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
