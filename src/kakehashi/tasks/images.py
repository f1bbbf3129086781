"""Decode uploaded bytes into an upright RGB image, refusing what is not a supported image."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from kakehashi.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DEFAULT_MAX_PIXELS = 64_000_000


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return the image in `data` as RGB with its EXIF orientation applied.

    Raises `UnsupportedMedia` for bytes that are not JPEG/PNG/WebP/BMP, `PayloadTooLarge` for an image
    with more than `max_pixels` pixels (checked from the header, before decoding), and `InvalidInput`
    for a truncated or corrupt image.
    """
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            "the file is not an image in a supported format (" + ", ".join(FORMATS) + ")"
        ) from None
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"the image is too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the image is truncated or corrupt: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if width == 0 or height == 0:
        raise InvalidInput(f"the image has no pixels ({width}x{height})")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the {image.format} image is truncated or corrupt: {exc}") from None
