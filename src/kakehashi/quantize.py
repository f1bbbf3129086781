"""`kakehashi quantize`: an INT8 copy of an ONNX model (ONNX Runtime static quantization, QDQ, per channel),
calibrated on the user's images, and a report of what it costs and gains on held-out images.

Needs the `quantize` extra (`onnx`). Detection agreement: each FP32 box is matched to an INT8 box of the same
class at IoU ≥ 0.5 (greedy, by confidence; rotated boxes by their upright bounds); the report gives the share
matched and the confidence deltas. For a classifier, agreement is the share of images with the same top-1 class.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kakehashi.backends import best_seconds
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.errors import InvalidInput
from kakehashi.protocols.vision import parse_params
from kakehashi.repository.config import ModelConfig, load_model_config
from kakehashi.repository.handle import ModelHandle
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits
from kakehashi.tasks import images
from kakehashi.tasks.agreement import best_counterpart
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task


@dataclass
class Report:
    fp32_ms: float
    int8_ms: float
    matched: int
    boxes: int
    extra: int
    confidence_deltas: list[float]
    classify: bool = False

    def lines(self) -> list[str]:
        deltas = np.abs(self.confidence_deltas) if self.confidence_deltas else np.zeros(1)
        share = self.matched / self.boxes if self.boxes else 1.0
        speed = (
            f"inference (batch 1, best of 10): FP32 {self.fp32_ms:.1f} ms, INT8 {self.int8_ms:.1f} ms "
            f"({self.fp32_ms / self.int8_ms:.2f}x)"
        )
        if self.classify:
            return [
                speed,
                f"held-out images: INT8 gives FP32's top-1 class on {self.matched}/{self.boxes} ({share:.1%})",
                f"top-1 confidence deltas where they agree: mean {deltas.mean():.4f}, max {deltas.max():.4f}",
            ]
        return [
            speed,
            f"held-out detections: {self.matched}/{self.boxes} FP32 boxes found by INT8 at IoU >= 0.5 with the "
            f"same class ({share:.1%}); {self.extra} INT8 boxes without an FP32 match",
            f"confidence deltas of matched boxes: mean {deltas.mean():.4f}, max {deltas.max():.4f}",
        ]


def image_files(folder: Path) -> list[Path]:
    files = images.image_files([folder])
    if not files:
        raise InvalidInput(f"{folder}: no images")
    return files


def quantize(model: Path, config: ModelConfig, calibration: list[Path], out: Path) -> None:
    """Write the INT8 model calibrated on `calibration` (pre-processed exactly as when serving)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    backend = OnnxRuntimeBackend(model)
    task = resolve_task(backend, config, model)
    if task is None:
        raise InvalidInput(f"{model}: quantize needs an image model (detect, segment, pose, obb or classify)")
    image_input = task.input
    tensors = [
        prepare_image(p.read_bytes(), image_input, PredictParams(), Limits().max_pixels).tensor[None]
        for p in calibration
    ]

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter({image_input.name: tensor} for tensor in tensors)

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    prepared = Path(tempfile.mkdtemp(prefix="kakehashi-quantize-")) / "prepared.onnx"
    # shape inference and graph clean-up, as ONNX Runtime advises (its symbolic pass would need sympy)
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Images(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    _copy_metadata(model, out)


def _copy_metadata(source: Path, target: Path) -> None:
    """The FP32 model's metadata (Ultralytics' names, imgsz, task…) onto the INT8 model, so it serves the same."""
    import onnx

    original, quantized = onnx.load(str(source), load_external_data=False), onnx.load(str(target))
    kept = {entry.key for entry in quantized.metadata_props}
    for entry in original.metadata_props:
        if entry.key not in kept:
            quantized.metadata_props.append(entry)
    onnx.save(quantized, str(target))


def compare(
    reference: list[list[dict]], candidate: list[list[dict]], classify: bool = False
) -> tuple[int, int, int, list[float]]:
    """(matched, reference boxes, unmatched candidate boxes, confidence deltas of the matched); for a classifier
    (top-k, best first): (images with the same top-1 class, images, 0, their top-1 confidence deltas)."""
    matched = total = extra = 0
    deltas: list[float] = []
    for ours, theirs in zip(reference, candidate):
        if classify:
            total += 1
            if ours and theirs and theirs[0]["class"] == ours[0]["class"]:
                matched += 1
                deltas.append(theirs[0]["confidence"] - ours[0]["confidence"])
            continue
        free = list(theirs)
        for box in sorted(ours, key=lambda r: -r["confidence"]):
            total += 1
            best, iou = best_counterpart(box, free)
            if best is not None and iou >= 0.5:
                matched += 1
                deltas.append(best["confidence"] - box["confidence"])
                free.remove(best)
        extra += len(free)
    return matched, total, extra, deltas


def _handle(model: Path, config_path: Path | None) -> tuple[ModelHandle, ThreadPoolExecutor]:
    folder = Path(tempfile.mkdtemp(prefix="kakehashi-quantize-")) / "m"
    (folder / "1").mkdir(parents=True)
    shutil.copy(model, folder / "1" / "model.onnx")
    config = config_path.read_text() if config_path else ""
    (folder / "model.yaml").write_text(config + "\nbackend: onnxruntime\nbatching: {max_batch_size: 1}\n")
    pool = ThreadPoolExecutor(2)
    repository = ModelRepository(folder, pool, Limits(request_timeout_ms=0))
    repository.load_all()
    handle = repository.get("m")
    assert isinstance(handle, ModelHandle)  # a folder with model.onnx, never a pipeline
    return handle, pool


def _best_ms(handle: ModelHandle) -> float:
    backend = handle.require_ready()
    assert handle.task is not None, "quantize serves image models only"
    spec = handle.task.input
    feeds = {spec.name: np.zeros(spec.tensor_shape(spec.size), spec.dtype)[None]}
    return best_seconds(backend, feeds, runs=10) * 1000


def evaluate(fp32: Path, int8: Path, config_path: Path | None, held_out: list[Path], conf: float) -> Report:
    """Speed (batch 1) and detection agreement of the two models on `held_out`."""
    answers, speed, kinds = [], [], set()
    for model in (fp32, int8):
        handle, pool = _handle(model, config_path)
        kinds.add(handle.kind)
        try:
            params = parse_params({"conf": [str(conf)]}, handle.config.defaults)
            predictions = asyncio.run(handle.predict([p.read_bytes() for p in held_out], params))
            answers.append([p.results for p in predictions])
            speed.append(_best_ms(handle))
        finally:
            asyncio.run(handle.close())
            pool.shutdown()
    classify = kinds == {"classify"}
    matched, total, extra, deltas = compare(answers[0], answers[1], classify=classify)
    return Report(speed[0], speed[1], matched, total, extra, deltas, classify)


def model_config_for(model: Path) -> tuple[ModelConfig, Path | None]:
    """The model.yaml that goes with `model` (beside it, or one folder up from a version folder), if any."""
    candidates = [model.parent / "model.yaml"]
    if model.parent.name.isdigit():
        candidates.append(model.parent.parent / "model.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return load_model_config(candidate), candidate
    return ModelConfig(), None
