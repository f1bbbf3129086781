"""Decode the redness map into boxes: cells at least `conf` red, joined with their neighbours into blobs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from kakehashi.handlers import HandlerContext
from kakehashi.tasks.params import PredictParams


class RedBlobs:
    def setup(self, context: HandlerContext) -> None:
        [image] = context.inputs
        self.input_name = image.name
        self.height, self.width = image.shape[2], image.shape[3]

    def preprocess(self, image: Image.Image, params: PredictParams) -> dict[str, np.ndarray]:
        """The whole image stretched to the input, RGB in 0..1, channels first; one row (no batch dimension)."""
        pixels = np.asarray(image.resize((self.width, self.height), Image.Resampling.BILINEAR), np.float32)
        return {self.input_name: pixels.transpose(2, 0, 1) / 255.0}

    def postprocess(self, outputs: dict[str, np.ndarray], image: Image.Image, params: PredictParams) -> list[dict]:
        heat = outputs["heat"][0]
        cell_h, cell_w = image.height / heat.shape[0], image.width / heat.shape[1]
        results = []
        for cells in _blobs(heat >= params.conf):
            rows, columns = zip(*cells)
            box = {
                "x1": round(min(columns) * cell_w, params.decimals),
                "y1": round(min(rows) * cell_h, params.decimals),
                "x2": round((max(columns) + 1) * cell_w, params.decimals),
                "y2": round((max(rows) + 1) * cell_h, params.decimals),
            }
            confidence = round(float(max(heat[r, c] for r, c in cells)), params.decimals)
            results.append({"class": 0, "name": "red blob", "confidence": confidence, "box": box})
        results.sort(key=lambda result: -result["confidence"])
        return results[: params.max_det]


def _blobs(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """The 4-connected groups of True cells."""
    seen = np.zeros_like(mask)
    groups = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        group, frontier = [], [start]
        while frontier:
            row, column = frontier.pop()
            group.append((int(row), int(column)))
            for near in ((row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)):
                inside = 0 <= near[0] < mask.shape[0] and 0 <= near[1] < mask.shape[1]
                if inside and mask[near] and not seen[near]:
                    seen[near] = True
                    frontier.append(near)
        groups.append(group)
    return groups
