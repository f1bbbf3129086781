"""Decoding and pre-processing like Ultralytics: formats, EXIF, letterbox geometry, tensor layout."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import image_bytes
from kakehashi.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from kakehashi.tasks.images import decode_image
from kakehashi.tasks.preprocess import BoxTransform, Fitted, ImageInput, fit_image, request_size, to_tensor


def spec(**changes) -> ImageInput:
    base = dict(
        name="images",
        size=(640, 640),
        dynamic_size=True,
        stride=32,
        resize="letterbox",
        pad_value=114,
        channels="rgb",
        layout="nchw",
        dtype="float32",
        scale=1 / 255,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    return ImageInput(**(base | changes))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_supported_formats_decode_to_rgb(fmt):
    image = decode_image(image_bytes(40, 30, fmt, color=(200, 100, 50)))
    assert image.mode == "RGB" and image.size == (40, 30)
    r, g, b = np.asarray(image)[15, 20]
    assert abs(int(r) - 200) < 8 and abs(int(g) - 100) < 8 and abs(int(b) - 50) < 8


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=95)
    upright = np.asarray(decode_image(buffer.getvalue()))
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 0] > 200 and upright[35, 10, 0] < 50  # red now on top


def test_grey_and_alpha_images_become_rgb():
    buffer = io.BytesIO()
    Image.new("LA", (8, 8), (128, 255)).save(buffer, "PNG")
    assert decode_image(buffer.getvalue()).mode == "RGB"


def test_bad_images_are_named():
    with pytest.raises(UnsupportedMedia, match="not an image"):
        decode_image(b"hello, world")
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_image(image_bytes(300, 300, "JPEG")[:400])
    with pytest.raises(PayloadTooLarge, match="limit"):
        decode_image(image_bytes(100, 100), max_pixels=5000)


def test_letterbox_matches_ultralytics_geometry():
    image = Image.new("RGB", (810, 1080), (10, 20, 30))
    fitted = fit_image(image, (640, 640), "letterbox")
    ratio = 640 / 1080
    new_w = round(810 * ratio)  # 480
    left = round((640 - new_w) / 2 - 0.1)
    transform = fitted.transform
    assert transform.scale_x == transform.scale_y == pytest.approx(ratio)
    assert (transform.pad_x, transform.pad_y) == (left, 0)
    pixels = to_tensor(fitted, spec(scale=1.0), (640, 640)).transpose(1, 2, 0)  # back to HWC RGB
    assert pixels.shape == (640, 640, 3)
    assert (pixels[:, :left] == 114).all() and (pixels[:, left + new_w :] == 114).all()
    assert (pixels[:, left : left + new_w] == (10, 20, 30)).all()
    box = np.asarray([[left, 0, left + new_w, 640]], np.float32)
    assert transform.to_original(box).tolist() == [[0, 0, 810, 1080]]


def test_stretch_and_crop():
    image = Image.new("RGB", (600, 300))
    image.paste((255, 0, 0), (0, 0, 150, 300))  # the left quarter red: cut off by the crop, kept by the stretch
    fitted = fit_image(image, (100, 100), "stretch")
    assert fitted.pixels.shape == (100, 100, 3) and fitted.pixels[50, 10, 0] == 255
    transform = fitted.transform
    assert transform.to_original(np.asarray([[50, 50, 100, 100]], np.float32)).tolist() == [[300, 150, 600, 300]]
    fitted = fit_image(image, (100, 100), "crop")
    assert fitted.pixels.shape == (100, 100, 3) and (fitted.top, fitted.left) == (0, 0)
    assert (fitted.pixels[:, 1:, 0] == 0).all()  # (the first column blends with the red one before it)
    assert fitted.transform.to_original(np.asarray([[0, 0, 100, 100]], np.float32)).tolist() == [[150, 0, 450, 300]]


def test_imgsz_is_stride_aligned_and_fixed_models_refuse_it():
    assert request_size(spec(), (500, 333)) == (512, 352)
    assert request_size(spec(), None) == (640, 640)
    assert request_size(spec(dynamic_size=False), (640, 640)) == (640, 640)
    with pytest.raises(InvalidInput, match="fixed input size 640x640"):
        request_size(spec(dynamic_size=False), (320, 320))


def test_tensor_layouts_and_types():
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = 255, 51  # R=255, B=51
    fitted = Fitted(pixels, 1, 0, BoxTransform(1.0, 1.0, 0.0, 1.0, 3, 2))  # one padding row above
    nchw = to_tensor(fitted, spec(), (3, 3))
    assert nchw.shape == (3, 3, 3) and nchw.dtype == np.float32
    assert nchw[:, 0] == pytest.approx(np.full((3, 3), 114 / 255))  # the padding, scaled like the pixels
    assert (nchw[0, 1:] == 1.0).all() and (nchw[1, 1:] == 0).all() and nchw[2, 1:] == pytest.approx(0.2)
    bgr = to_tensor(fitted, spec(channels="bgr", layout="nhwc", dtype="uint8"), (3, 3))
    assert bgr.shape == (3, 3, 3) and bgr.dtype == np.uint8
    assert bgr[1, 0].tolist() == [51, 0, 255] and bgr[0, 0].tolist() == [114, 114, 114]
    half = to_tensor(fitted, spec(dtype="float16", scale=1.0, mean=(255.0, 0.0, 0.0), std=(1.0, 1.0, 51.0)), (3, 3))
    assert half.dtype == np.float16 and (half[0, 1:] == 0).all() and (half[2, 1:] == 1).all()
    strided = np.zeros((2, 3, 4), np.uint8)[..., :3]  # a view of RGBA pixels, as video frames come
    strided[..., 2] = 51
    assert to_tensor(Fitted(strided, 0, 0, fitted.transform), spec(scale=1.0), (2, 3))[2].tolist() == [[51] * 3] * 2
