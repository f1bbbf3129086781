"""What detection and classification share: bytes in, one input tensor out, results per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kakehashi.tasks.images import Decoded, ImageData, Opened, decode_reduced
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import BoxTransform, ImageInput, fit_image, request_size, to_tensor


@dataclass(frozen=True)
class Prepared:
    """One image ready for inference: its tensor, input size (h, w) and how to map boxes back."""

    tensor: np.ndarray
    size: tuple[int, int]
    transform: BoxTransform

    @property
    def original_shape(self) -> tuple[int, int]:
        return self.transform.height, self.transform.width


def prepare_image(data: ImageData | Opened, spec: ImageInput, params: PredictParams, max_pixels: int) -> Prepared:
    """Decode (unless already decoded; a big JPEG at a reduced scale, `decode_reduced`; a video frame converted
    and scaled at once), resize and convert one image for a model with input `spec`; the transform maps to the
    original's pixels."""
    size = request_size(spec, params.imgsz)
    if not isinstance(data, bytes | Opened | Image.Image):  # a Picture: scaled to fit as it turns into RGB
        fitted = fit_image(data, size, spec.resize)
        return Prepared(to_tensor(fitted, spec, size), size, fitted.transform)
    decoded = (
        Decoded(data.convert("RGB"), data.size)
        if isinstance(data, Image.Image)
        else decode_reduced(data, max_pixels, size)
    )
    fitted = fit_image(decoded.image, size, spec.resize)
    original = fitted.transform.for_original(decoded.reduction, decoded.offset, decoded.size)
    return Prepared(to_tensor(fitted, spec, size), size, original)
