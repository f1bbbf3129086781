"""Instance segmentation: detections with masks from coefficients × prototypes, as polygons or run lengths.

Each mask is computed only inside its box and straight at original-image resolution: the original pixels in
the box are mapped back through the letterbox to prototype coordinates and the mask logits sampled there
(bilinear), which is Ultralytics' crop → upsample → un-letterbox in one step. A pixel is in the mask when
sigmoid(logit) > 0.5, i.e. logit > 0.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np

from kakehashi.errors import ModelLoadError
from kakehashi.tasks.detect import box_results
from kakehashi.tasks.detection_head import detection_head
from kakehashi.tasks.heads import Head
from kakehashi.tasks.image_task import Prepared
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import BoxTransform, ImageInput
from kakehashi.tasks.registry import ModelFacts, TaskKind, register


def _box_mask(
    logits: np.ndarray, box: tuple[int, int, int, int], transform: BoxTransform, input_size: tuple[int, int]
) -> np.ndarray:
    """The mask (bool, box height × box width) of original pixels x1..x2, y1..y2 from prototype-res `logits`."""
    import cv2  # loaded with a segmentation model (`SegmentTask`), not by every server

    x1, y1, x2, y2 = box
    proto_h, proto_w = logits.shape
    fx, fy = proto_w / input_size[1], proto_h / input_size[0]
    # original pixel (u, v) of the box → prototype coordinate; pixel centres on both sides
    matrix = np.array(
        [
            [transform.scale_x * fx, 0, ((x1 + 0.5) * transform.scale_x + transform.pad_x) * fx - 0.5],
            [0, transform.scale_y * fy, ((y1 + 0.5) * transform.scale_y + transform.pad_y) * fy - 0.5],
        ],
        np.float64,
    )
    sampled = cv2.warpAffine(
        logits.astype(np.float32),
        matrix,
        (x2 - x1, y2 - y1),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return sampled > 0


def polygon(mask: np.ndarray, left: int, top: int, decimals: int) -> dict:
    """The mask's outline as `{x: [...], y: [...]}` in original pixels. A mask of several regions gives one
    outline through all of them, each joined to the next at their closest points (as Ultralytics' `Masks.xy`)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return {"x": [], "y": []}
    points = joined([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    return {"x": (points[:, 0] + left).round(decimals).tolist(), "y": (points[:, 1] + top).round(decimals).tolist()}


def joined(outlines: list[np.ndarray]) -> np.ndarray:
    """One closed path visiting every outline in order: along each one to the point nearest the next outline,
    over to that outline and, after all later ones, back the same way to go round the rest of it."""
    if len(outlines) == 1:
        return outlines[0]
    exits, entries = [], [0]  # per outline: where the path leaves for the next one / arrives from the previous
    for here, after in zip(outlines, outlines[1:]):
        a, b = here.astype(np.float32), after.astype(np.float32)  # only the nearest pair matters
        distances = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        leave, arrive = np.unravel_index(distances.argmin(), distances.shape)
        exits.append(int(leave))
        entries.append(int(arrive))

    def around(outline: np.ndarray, start: int, stop: int, whole_if_same: bool = False) -> np.ndarray:
        """Points from `start` forward to `stop` (both included), wrapping round the closed outline; the whole
        way round when they are the same point and `whole_if_same`."""
        steps = (stop - start) % len(outline) or (len(outline) if whole_if_same else 0)
        return np.roll(outline, -start, axis=0)[np.arange(steps + 1) % len(outline)]

    path: list[np.ndarray] = []
    for index, outline in enumerate(outlines[:-1]):  # outward: entry → exit of each, then on to the next
        path.append(around(outline, entries[index], exits[index]))
    last = outlines[-1]
    path.append(around(last, entries[-1], entries[-1], whole_if_same=True))  # the last: all round
    for index in range(len(outlines) - 2, -1, -1):  # homeward: exit → entry of each, the rest of its outline
        path.append(around(outlines[index], exits[index], entries[index], whole_if_same=True))
    return np.concatenate(path)


def run_lengths(mask: np.ndarray, left: int, top: int, height: int, width: int) -> dict:
    """COCO's uncompressed RLE of the whole-image mask: column-major, counts starting with a run of zeros."""
    full = np.zeros((height, width), bool)
    full[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
    flat = full.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"size": [height, width], "counts": counts}


@dataclass(frozen=True)
class SegmentTask:
    """A segmentation model: a detection head whose extra columns are mask coefficients, and prototypes."""

    input: ImageInput
    head: Head
    names: tuple[str, ...]
    protos: str
    kind: str = "segment"

    def __post_init__(self) -> None:
        importlib.import_module("cv2")  # OpenCV (0.2 s to import) at load, not at the first request

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared, params: PredictParams) -> list[dict]:
        """Each result gets `segments: {x, y}` (its mask's outline), or `rle` with `masks=rle`."""
        found = self.head.decode(outputs, prepared.size, params)
        results = box_results(found, prepared, params, self.names)
        if not results:
            return results
        protos = outputs[self.protos]
        logits = (found.extra @ protos.reshape(protos.shape[0], -1)).reshape(-1, *protos.shape[1:])
        transform = prepared.transform
        height, width = prepared.original_shape
        for result, logit, box in zip(results, logits, transform.to_original(found.boxes)):
            left, top = math.floor(box[0]), math.floor(box[1])
            right, bottom = min(math.ceil(box[2]), width), min(math.ceil(box[3]), height)
            mask = (
                _box_mask(logit, (left, top, right, bottom), transform, prepared.size)
                if right > left and bottom > top
                else np.zeros((0, 0), bool)
            )
            if params.masks == "rle":
                result["rle"] = run_lengths(mask, left, top, height, width)
            else:
                result["segments"] = polygon(mask, left, top, params.decimals)
        return results


def _build(facts: ModelFacts) -> SegmentTask:
    """A segmenter has a detection head whose rows carry mask coefficients for its prototype output."""
    outputs = facts.backend.outputs
    protos = next((s.name for s in outputs if len(s.shape) == 4), None)
    if protos is None:
        raise ModelLoadError(
            f"{facts.path}: task 'segment' needs a prototype output [N, c, h, w]; the model's outputs "
            f"are {[s.to_json() for s in outputs]}"
        )
    head, names = detection_head(facts, extra=int(facts.probe()[protos].shape[1]), protos=protos)
    return SegmentTask(facts.image_input, head, names, protos)


register(TaskKind("segment", _build))
