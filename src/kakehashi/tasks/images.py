"""Decode uploaded bytes into an upright RGB image, refusing what is not a supported image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kakehashi.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # animated GIF/PNG/WebP: the first frame
# file suffixes of those formats and their media types
IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
DEFAULT_MAX_PIXELS = 64_000_000
# leading bytes of each format: a file that has them but cannot be opened is corrupt (400), not foreign (415)
SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"BM": "BMP",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16-bit grey (PNG, TIFF): scaled to 8 bits, not clipped


def image_files(sources: list[Path]) -> list[Path]:
    """Image files from files and folders (folders searched recursively, by suffix), sorted per folder."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_TYPES)
        else:
            found.append(source)
    return found


def _format_by_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)


# the pixel limit is Kakehashi's own (`max_pixels`, checked from the header before decoding): Pillow's fixed
# bomb limit (~179 megapixels) would otherwise cap `--max-pixels` below what an operator sets
Image.MAX_IMAGE_PIXELS = None


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        claimed = _format_by_signature(data)
        if claimed:
            raise InvalidInput(
                f"the file starts like a {claimed} image but cannot be read (corrupt header, or no pixels)"
            ) from None
        raise UnsupportedMedia("the file is not an image in a supported format (" + ", ".join(FORMATS) + ")") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the image is truncated or corrupt: {exc}") from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_DEPTH_MODES:
        grey = np.clip(np.asarray(image, dtype=np.uint32), 0, 65535) // 257
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return the image in `data` as RGB with its EXIF orientation applied.

    Raises `UnsupportedMedia` for bytes that are not one of `FORMATS`, `PayloadTooLarge` for an image
    with more than `max_pixels` pixels (checked from the header, before decoding), and `InvalidInput`
    for a truncated or corrupt image.
    """
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if width == 0 or height == 0:
        raise InvalidInput(f"the image has no pixels ({width}x{height})")
    try:
        image.load()
        return _rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the {image.format} image is truncated or corrupt: {exc}") from None
