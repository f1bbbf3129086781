"""Turn an RGB image into the model's input tensor (letterbox, stretch or centre crop), and map boxes back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from kakehashi.errors import InvalidInput
from kakehashi.tasks.images import Picture

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


@dataclass(frozen=True)
class ImageInput:
    """Everything needed to build one input tensor, resolved once at model load."""

    name: str
    size: tuple[int, int]  # height, width used when a request gives no imgsz
    dynamic_size: bool  # the graph accepts other spatial sizes (imgsz per request)
    stride: int
    resize: str  # letterbox | stretch | crop
    pad_value: int
    channels: str  # rgb | bgr
    layout: str  # nchw | nhwc
    dtype: str  # float32 | float16 | uint8
    scale: float
    mean: tuple[float, float, float]  # in the model's channel order, after scaling
    std: tuple[float, float, float]

    def tensor_shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        """Shape of one image's tensor (without the batch dimension) at `size`."""
        height, width = size
        return (3, height, width) if self.layout == "nchw" else (height, width, 3)


@dataclass(frozen=True)
class BoxTransform:
    """Maps model-input pixel coordinates back to the original image: x = (x' - pad_x) / scale_x."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes (n, 4) in model-input pixels to original pixels, clipped to the image."""
        out = np.empty_like(boxes, dtype=np.float32)
        xs, ys = out[:, 0::2], out[:, 1::2]  # views: x1, x2 and y1, y2
        np.clip((boxes[:, 0::2] - self.pad_x) / self.scale_x, 0, self.width, out=xs)
        np.clip((boxes[:, 1::2] - self.pad_y) / self.scale_y, 0, self.height, out=ys)
        return out

    def for_original(self, reduction: int, offset: tuple[int, int], size: tuple[int, int]) -> BoxTransform:
        """This mapping for the original of an image decoded `reduction` times smaller, whose pixel edge x is
        the original's x * reduction + offset[0] (likewise y); `size` is the original's (width, height)."""
        scale_x, scale_y = self.scale_x / reduction, self.scale_y / reduction
        return BoxTransform(scale_x, scale_y, self.pad_x - offset[0] * scale_x, self.pad_y - offset[1] * scale_y, *size)

    def points_to_original(self, points: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map (..., 2) x, y points in model-input pixels to original pixels (clipped to the image if `clip`)."""
        out = np.empty(points.shape, np.float32)
        out[..., 0] = (points[..., 0] - self.pad_x) / self.scale_x
        out[..., 1] = (points[..., 1] - self.pad_y) / self.scale_y
        if clip:
            np.clip(out[..., 0], 0, self.width, out=out[..., 0])
            np.clip(out[..., 1], 0, self.height, out=out[..., 1])
        return out


@dataclass(frozen=True)
class Fitted:
    """An image scaled (and for `crop`, cut) for the model's input: its HWC uint8 RGB pixels go at (`top`, `left`)
    of the input, the rest is padding (a letterbox's bands); `transform` maps boxes back to the original."""

    pixels: np.ndarray
    top: int
    left: int
    transform: BoxTransform


def fit_image(image: Image.Image | Picture, size: tuple[int, int], mode: str) -> Fitted:
    """Fit `image` to an input of `size` (height, width) the way `mode` says: letterbox, stretch or centre crop."""
    height, width = size
    w0, h0 = image.size
    if mode == "stretch":
        transform = BoxTransform(width / w0, height / h0, 0.0, 0.0, w0, h0)
        return Fitted(_scaled(image, width, height), 0, 0, transform)
    if mode == "crop":
        ratio = max(height / h0, width / w0)
        new_w, new_h = max(width, round(w0 * ratio)), max(height, round(h0 * ratio))
        left, top = (new_w - width) // 2, (new_h - height) // 2
        cropped = _scaled(image, new_w, new_h)[top : top + height, left : left + width]
        return Fitted(cropped, 0, 0, BoxTransform(ratio, ratio, -left, -top, w0, h0))
    ratio = min(height / h0, width / w0)
    new_w, new_h = round(w0 * ratio), round(h0 * ratio)
    left, top = round((width - new_w) / 2 - 0.1), round((height - new_h) / 2 - 0.1)
    return Fitted(_scaled(image, new_w, new_h), top, left, BoxTransform(ratio, ratio, float(left), float(top), w0, h0))


def _scaled(image: Image.Image | Picture, width: int, height: int) -> np.ndarray:
    """HWC uint8 RGB pixels of `image` at `width` x `height` (bilinear)."""
    if not isinstance(image, Image.Image):
        return image.scaled(width, height)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def to_tensor(fitted: Fitted, spec: ImageInput, size: tuple[int, int]) -> np.ndarray:
    """One image's input tensor at `size` (no batch dimension): the fitted pixels in place, `spec.pad_value`
    around them, in the model's channel order, layout, type and normalisation. Built one channel at a time:
    numpy copies a channel out of interleaved pixels several times faster than it transposes all three at once."""
    dtype = np.uint8 if spec.dtype == "uint8" else np.float32
    tensor = np.empty(spec.tensor_shape(size), dtype)
    tensor.fill(spec.pad_value)
    pixels, top, left = fitted.pixels, fitted.top, fitted.left
    rows, columns = slice(top, top + pixels.shape[0]), slice(left, left + pixels.shape[1])
    for channel, source in enumerate((2, 1, 0) if spec.channels == "bgr" else (0, 1, 2)):
        if spec.layout == "nchw":
            tensor[channel, rows, columns] = pixels[..., source]
        else:
            tensor[rows, columns, channel] = pixels[..., source]
    if spec.dtype == "uint8":
        return tensor
    if spec.scale != 1.0:
        tensor *= np.float32(spec.scale)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        shape = (3, 1, 1) if spec.layout == "nchw" else (1, 1, 3)
        mean = np.asarray(spec.mean, np.float32).reshape(shape)
        std = np.asarray(spec.std, np.float32).reshape(shape)
        tensor -= mean
        tensor /= std
    return tensor.astype(_NUMPY_DTYPES[spec.dtype], copy=False)


def request_size(spec: ImageInput, imgsz: tuple[int, int] | None) -> tuple[int, int]:
    """The input size for a request: the model's, or `imgsz` rounded up to the stride if the graph allows."""
    if imgsz is None:
        return spec.size
    if not spec.dynamic_size:
        if tuple(imgsz) == spec.size:
            return spec.size
        raise InvalidInput(
            f"imgsz={list(imgsz)} is not supported: this model has a fixed input size "
            f"{spec.size[0]}x{spec.size[1]} (height x width)"
        )
    stride = spec.stride
    return tuple(max(stride, -(-v // stride) * stride) for v in imgsz)  # type: ignore[return-value]
