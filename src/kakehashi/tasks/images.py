"""Decode uploaded bytes into an upright RGB image, refusing what is not a supported image."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

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
ORIENTATION = 0x0112  # the EXIF tag
# how each EXIF orientation turns the stored pixels upright (as `ImageOps.exif_transpose` does): width and
# height swapped, then whether the upright x and y axes run backwards through the stored pixels
TURNS = {
    2: (False, True, False),
    3: (False, True, True),
    4: (False, False, True),
    5: (True, False, False),
    6: (True, True, False),
    7: (True, True, True),
    8: (True, False, True),
}
UNTURNED = (False, False, False)


@dataclass(frozen=True)
class Decoded:
    """An upright RGB image, maybe decoded `reduction` times smaller than the original: its pixel edge x is the
    original's x * reduction + offset[0] (likewise y); `size` is the original's upright (width, height)."""

    image: Image.Image
    size: tuple[int, int]
    reduction: int = 1  # 1, 2, 4 or 8
    offset: tuple[int, int] = (0, 0)  # non-zero only on an axis mirrored by the orientation (padded blocks)


class Picture(Protocol):
    """A decoded picture not yet in RGB (a video frame): converted whole, or scaled to a model's input in the same
    pass (swscale converts and scales a video frame at once, several times faster than converting then resizing)."""

    @property
    def size(self) -> tuple[int, int]:
        """Width, height."""
        ...

    def rgb(self) -> Image.Image:
        """The whole picture in RGB."""
        ...

    def scaled(self, width: int, height: int) -> np.ndarray:
        """The picture in RGB (height, width, 3 uint8), scaled to `width` x `height`."""
        ...


ImageData = bytes | Image.Image | Picture  # what a predict request carries per image


# a JPEG file of at most this many bytes opens in a few milliseconds whatever it holds (Pillow reads its markers in
# Python: about 0.25 us a byte of empty comments); with one scan, decoding it then costs what its header's size says
# (each further scan, progressive or not, is another pass over the image's blocks, and a scan can take 10 bytes)
SMALL_FILE_BYTES = 16 * 1024
START_OF_SCAN = b"\xff\xda"  # never inside a scan's coded data (a 0xff there is followed by 0x00)


@dataclass(frozen=True)
class Opened:
    """An encoded image whose header was read: its stored size is known, its pixels are not decoded yet."""

    image: Image.Image

    @property
    def pixels(self) -> int:
        return self.image.width * self.image.height


def is_small_jpeg_file(data: bytes) -> bool:
    """Whether `data` claims to be a JPEG of at most `SMALL_FILE_BYTES` with one scan (a marker's payload holding
    the scan marker's bytes, e.g. an EXIF thumbnail, makes it look like more: it is not one then)."""
    return len(data) <= SMALL_FILE_BYTES and _format_by_signature(data) == "JPEG" and data.count(START_OF_SCAN) == 1


def open_image(data: bytes) -> Opened:
    """Read the header of the image in `data`, leaving the pixels to decode (`decode_reduced` goes on from there).
    Raises `InvalidInput` (empty, corrupt header) or `UnsupportedMedia` (not an image of `FORMATS`)."""
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    return Opened(_open(data))


def rgb_image(data: ImageData, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Any image a request carries as a whole upright RGB image of the caller's own (decoded if bytes; a copy of a
    picture's, which snapshots and the live view share)."""
    if isinstance(data, Image.Image):
        return data.convert("RGB")
    if isinstance(data, bytes):
        return decode_image(data, max_pixels)
    return data.rgb().copy()


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


def _draft(image: Image.Image, at_least: tuple[int, int], swapped: bool) -> int:
    """Have a JPEG decoded at the smallest DCT scale (libjpeg's 1/2, 1/4, 1/8) that keeps it at least
    `at_least` (height, width) once upright; returns the reduction, 1 for none."""
    height, width = at_least[::-1] if swapped else at_least  # draft sees the stored, unturned pixels
    full_width = image.width
    drafted = image.draft(None, (width, height)) if isinstance(image, JpegImageFile) else None  # MPO too
    return 1 if drafted is None else round(full_width / drafted[1][2])


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return the image in `data` as RGB with its EXIF orientation applied, at full size.

    Raises `UnsupportedMedia` for bytes that are not one of `FORMATS`, `PayloadTooLarge` for an image
    with more than `max_pixels` pixels (checked from the header, before decoding), and `InvalidInput`
    for a truncated or corrupt image.
    """
    return decode_reduced(data, max_pixels).image


def decode_reduced(
    data: bytes | Opened, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: tuple[int, int] | None = None
) -> Decoded:
    """`decode_image` for a model whose input is `at_least` (height, width): a JPEG at least twice that in both
    dimensions is decoded at a reduced DCT scale that stays at least that size (several times faster)."""
    image = (data if isinstance(data, Opened) else open_image(data)).image
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels")
    if width == 0 or height == 0:
        raise InvalidInput(f"the image has no pixels ({width}x{height})")
    try:
        turn = TURNS.get(image.getexif().get(ORIENTATION, 1), UNTURNED)
        swapped, flip_x, flip_y = turn
        reduction = _draft(image, at_least, swapped) if at_least else 1
        image.load()
        upright = _rgb(image if turn == UNTURNED else ImageOps.exif_transpose(image))  # no copy when upright
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"the {image.format} image is truncated or corrupt: {exc}") from None
    if swapped:
        width, height = height, width
    offset_x = width - upright.width * reduction if flip_x else 0
    offset_y = height - upright.height * reduction if flip_y else 0
    return Decoded(upright, (width, height), reduction, (offset_x, offset_y))
