"""What detection and classification share: bytes in, one input tensor out, results per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kakehashi.tasks.images import decode_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.preprocess import BoxTransform, ImageInput, request_size, resize_image, to_tensor


@dataclass(frozen=True)
class Prepared:
    """One image ready for inference: its tensor, input size (h, w) and how to map boxes back."""

    tensor: np.ndarray
    size: tuple[int, int]
    transform: BoxTransform

    @property
    def original_shape(self) -> tuple[int, int]:
        return self.transform.height, self.transform.width


def prepare_image(data: bytes | Image.Image, spec: ImageInput, params: PredictParams, max_pixels: int) -> Prepared:
    """Decode (unless already decoded, e.g. a video frame), resize and convert one image for a model with
    input `spec`."""
    size = request_size(spec, params.imgsz)
    image = data.convert("RGB") if isinstance(data, Image.Image) else decode_image(data, max_pixels)
    pixels, transform = resize_image(image, size, spec.resize, spec.pad_value)
    return Prepared(to_tensor(pixels, spec), size, transform)
