"""Big camera frames (issue 16, point 5): a JPEG at least twice the model's input is decoded at a reduced DCT
scale, and every coordinate of the answer is still in the original's pixels (EXIF orientation applied)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from conftest import IMAGES, MODELS, YOLO11, YOLO26, quick_model
from inprocess import load, predict
from kakehashi.tasks.images import ORIENTATION, decode_image, decode_reduced
from kakehashi.tasks.preprocess import BoxTransform
from onnx_builders import offset_output

BUNDLED = Path(__file__).parent.parent / "src" / "kakehashi" / "assets" / "models" / "ssdlite-person"


def jpeg(image: Image.Image, orientation: int = 1) -> bytes:
    """`image` as a quality-90 JPEG, with an EXIF orientation tag unless 1."""
    exif = Image.Exif()
    if orientation != 1:
        exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `upright` under `orientation` (`exif_transpose` turns them back)."""
    undo = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90"}
    undo |= {7: "TRANSVERSE", 8: "ROTATE_270"}
    return upright if orientation == 1 else upright.transpose(Image.Transpose[undo[orientation]])


@pytest.fixture(scope="module")
def astronaut_12mp() -> Image.Image:
    """The astronaut, upscaled to 4000×3000 (12 MP)."""
    return Image.open(IMAGES / "astronaut.png").convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)


def iou(a: dict, b: dict) -> float:
    """Intersection over union of two `{x1, y1, x2, y2}` boxes."""
    width = min(a["x2"], b["x2"]) - max(a["x1"], b["x1"])
    height = min(a["y2"], b["y2"]) - max(a["y1"], b["y1"])
    inter = max(width, 0) * max(height, 0)
    area = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"])
    return inter / (area - inter)


def test_a_12_mp_jpeg_for_a_640_input_is_decoded_at_a_quarter_and_reports_its_full_size(astronaut_12mp):
    data = jpeg(astronaut_12mp)
    decoded = decode_reduced(data, at_least=(640, 640))
    assert decoded.reduction == 4 and decoded.image.size == (1000, 750)
    assert decoded.size == (4000, 3000) and decoded.offset == (0, 0)
    full = decode_image(data)
    assert full.size == (4000, 3000)
    shrunk = np.asarray(full.reduce(4), np.float32)
    assert np.abs(np.asarray(decoded.image, np.float32) - shrunk).mean() < 3  # the same picture, smaller


@pytest.mark.parametrize(
    ("size", "fmt", "at_least", "reduction"),
    [
        ((4000, 3000), "PNG", (640, 640), 1),  # only JPEGs
        ((1279, 3000), "JPEG", (640, 640), 1),  # not twice the input in width
        ((1280, 1280), "JPEG", (640, 640), 2),  # exactly twice
        ((4000, 3000), "JPEG", (640, 1920), 2),  # a wide input: 4000 // 1920 = 2
        ((4000, 3000), "JPEG", None, 1),  # no model input: full size
        ((4000, 3000), "MPO", (640, 640), 4),  # a camera's multi-picture JPEG: its first picture
    ],
)
def test_only_jpegs_at_least_twice_the_input_are_reduced_and_never_below_it(size, fmt, at_least, reduction):
    buffer = io.BytesIO()
    pictures = {"save_all": True, "append_images": [Image.new("RGB", (8, 8))]} if fmt == "MPO" else {}
    Image.new("RGB", size, (90, 120, 200)).save(buffer, fmt, **pictures)
    decoded = decode_reduced(buffer.getvalue(), at_least=at_least)
    assert decoded.reduction == reduction and decoded.size == size
    assert decoded.image.size == (-(-size[0] // reduction), -(-size[1] // reduction))
    if at_least:
        assert decoded.image.height >= at_least[0] and decoded.image.width >= at_least[1]


@pytest.mark.parametrize(("at_least", "reduction"), [((400, 1000), 1), ((1000, 400), 2)])
def test_the_reduction_is_chosen_on_the_upright_size(at_least, reduction):
    """Stored 3000×1400, upright 1400×3000 (orientation 6): a 1000-wide input must not be reduced (1400 / 2 <
    1000), though the stored pixels are 3000 wide."""
    decoded = decode_reduced(jpeg(Image.new("RGB", (3000, 1400)), 6), at_least=at_least)
    assert decoded.reduction == reduction and decoded.size == (1400, 3000)
    assert decoded.image.height >= at_least[0] and decoded.image.width >= at_least[1]


def bright_centre(image: Image.Image) -> np.ndarray:
    """x, y of the bright square's centre (weighted by brightness above the background), in pixel indices."""
    weights = np.clip(np.asarray(image.convert("L"), np.float64) - 20, 0, None)
    ys, xs = np.indices(weights.shape)
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_pixels_map_onto_the_original_for_every_orientation(orientation):
    """4003×3001 is no multiple of 8: on an axis the orientation mirrors, the padded last block shifts the
    reduced image by 5 or 7 original pixels, which the offset accounts for."""
    upright = Image.new("RGB", (4003, 3001), (20, 20, 20))
    upright.paste((230, 230, 230), (1200, 700, 1600, 1000))
    data = jpeg(stored(upright, orientation), orientation)
    decoded = decode_reduced(data, at_least=(300, 300))
    assert decoded.reduction == 8 and decoded.size == upright.size
    mapped = (bright_centre(decoded.image) + 0.5) * 8 + np.array(decoded.offset) - 0.5
    assert mapped == pytest.approx(bright_centre(decode_image(data)), abs=1.5)


@pytest.fixture(scope="module")
def person_detector(tmp_path_factory):
    """The bundled real detector (300×300 input, stretched), loaded quickly."""
    root = tmp_path_factory.mktemp("bundled")
    folder = quick_model(BUNDLED / "1" / "model.onnx", root, (BUNDLED / "model.yaml").read_text())
    return load(folder)


@pytest.fixture(scope="module")
def reference(person_detector, astronaut_12mp):
    """The astronaut's detections from a full decode of the upright 12 MP JPEG (PIL's draft made to do nothing)."""
    data = jpeg(astronaut_12mp)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, mode, size: None)
        assert decode_reduced(data, at_least=(300, 300)).image.size == (4000, 3000)
        [answer] = predict(person_detector, data)
    return answer


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_the_real_detector_finds_the_same_person_in_original_pixels(
    person_detector, astronaut_12mp, reference, orientation
):
    [answer] = predict(person_detector, jpeg(stored(astronaut_12mp, orientation), orientation))
    assert answer.shape == reference.shape == (3000, 4000)
    assert reference.results and len(answer.results) == len(reference.results)
    for found, expected in zip(answer.results, reference.results):
        assert found["name"] == expected["name"] == "person"
        assert iou(found["box"], expected["box"]) > 0.9
        assert found["confidence"] == pytest.approx(expected["confidence"], abs=0.05)


def test_the_box_mapping_goes_through_the_reduction_and_offset():
    """A point of the reduced image (x, y) is the original's (x * 4 - 3, y * 4): through the letterbox and back."""
    reduced = BoxTransform(0.5, 0.5, 10.0, 20.0, 250, 200)
    original = reduced.for_original(4, (-3, 0), (997, 800))
    points = np.array([[0.0, 0.0], [100.0, 50.0], [250.0, 200.0]])
    in_model = points * 0.5 + [10.0, 20.0]
    assert original.points_to_original(in_model).tolist() == [[0, 0], [397, 200], [997, 800]]
    assert (original.width, original.height) == (997, 800)


def coordinates(result: dict, factor: int = 1) -> list[float]:
    """A result's box corners and keypoints, `factor` times larger."""
    points = result.get("keypoints", {})
    values = [*result.get("box", {}).values(), *points.get("x", []), *points.get("y", [])]
    return [value * factor for value in values]


def extents(result: dict, factor: int = 1) -> list[float]:
    """Where a mask's outline starts and ends in x and y, `factor` times larger."""
    outline = result["segments"]
    return [f(outline[axis]) * factor for axis in "xy" for f in (min, max)]


def mask(rle: dict, factor: int = 1) -> np.ndarray:
    """The whole-image mask of an uncompressed RLE, shrunk `factor` times (a pixel is in when most of it is)."""
    height, width = rle["size"]
    values = np.repeat(np.arange(len(rle["counts"])) % 2, rle["counts"]).astype(bool)
    full = values.reshape((height, width), order="F")
    return full.reshape(height // factor, factor, width // factor, factor).mean((1, 3)) > 0.5


@pytest.mark.parametrize(
    "model",
    [
        YOLO11,
        YOLO26,
        MODELS / "yolo11n-seg-random-640-dynamic.onnx",
        MODELS / "yolo11n-pose-random-640-dynamic.onnx",
        MODELS / "yolo26n-pose-random-640-e2e-dynamic.onnx",
        MODELS / "yolo11n-obb-random-640-dynamic.onnx",
        MODELS / "yolo11n-cls-random-224-dynamic.onnx",
    ],
    ids=lambda path: path.stem.split("-random")[0],
)
def test_every_task_answers_in_original_pixels(model, astronaut_12mp, tmp_path):
    """The 12 MP JPEG is decoded at a quarter (an eighth for the 224 classifier): the model sees exactly what it
    sees given that reduced image itself, so the answers agree, the big one's coordinates `reduction` times
    larger and its shape the full one."""
    if "seg" in model.name:  # random prototypes + 0.02: masks that fill part of their boxes, not none
        model = offset_output(model, tmp_path / model.name, "output1", 0.02)
    handle = load(quick_model(model, tmp_path / "repo"))
    data = jpeg(astronaut_12mp)
    reduced = decode_reduced(data, at_least=handle.task.input.size)
    factor = reduced.reduction
    assert factor == (8 if "cls" in model.name else 4)
    [big] = predict(handle, data, conf=0.0001, max_det=5)
    [small] = predict(handle, reduced.image, conf=0.0001, max_det=5)
    assert big.shape == (3000, 4000) and small.shape == (3000 // factor, 4000 // factor)
    assert big.results and len(big.results) == len(small.results)
    for found, seen in zip(big.results, small.results):
        assert (found["class"], found["confidence"]) == (seen["class"], seen["confidence"])
        assert coordinates(found) == pytest.approx(coordinates(seen, factor), abs=1e-3)


def test_masks_and_outlines_are_drawn_at_the_original_size(astronaut_12mp, tmp_path):
    """Masks are drawn at full size from the reduced decode: the masks from the reduced image itself at 4× the
    resolution (shrunk back, IoU ≥ 0.9), and outlines that span the same part of the image."""
    model = offset_output(MODELS / "yolo11n-seg-random-640-dynamic.onnx", tmp_path / "seg.onnx", "output1", 0.02)
    handle = load(quick_model(model, tmp_path / "repo"))
    data = jpeg(astronaut_12mp)
    reduced = decode_reduced(data, at_least=(640, 640)).image
    [big], [small] = (predict(handle, image, conf=0.0001, max_det=5, masks="rle") for image in (data, reduced))
    masks = [(mask(found["rle"], 4), mask(seen["rle"])) for found, seen in zip(big.results, small.results)]
    assert big.results[0]["rle"]["size"] == [3000, 4000] and any(seen.any() for _, seen in masks)
    for shrunk, seen in masks:
        assert (shrunk & seen).sum() >= 0.9 * (shrunk | seen).sum()
    [big], [small] = (predict(handle, image, conf=0.0001, max_det=5) for image in (data, reduced))
    outlines = [(found, seen) for found, seen in zip(big.results, small.results) if seen["segments"]["x"]]
    assert outlines
    for found, seen in outlines:
        assert extents(found) == pytest.approx(extents(seen, 4), abs=8)
