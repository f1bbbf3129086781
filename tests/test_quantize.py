"""`kakehashi quantize`: an INT8 model calibrated on images, served like the FP32 one, with a report of speed and
agreement on held-out images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image, ImageOps

from conftest import IMAGES, YOLO11
from kakehashi.settings import default_model_path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kakehashi", *args], capture_output=True, text=True, timeout=600)


def _calibration(folder):
    folder.mkdir()
    for image in sorted(IMAGES.glob("*.png")):
        photo = Image.open(image).convert("RGB")
        for scale in (1.0, 0.8, 0.6):
            w, h = photo.size
            photo.crop((0, 0, int(w * scale), int(h * scale))).save(folder / f"{image.stem}-{scale}.jpg", quality=92)
    return folder


@pytest.mark.slow  # a whole INT8 quantization of the person detector, then serving it
def test_int8_person_detector_agrees_on_held_out_images(tmp_path):
    model = tmp_path / "person" / "1" / "model.onnx"
    shutil.copytree(default_model_path() / "ssdlite-person", tmp_path / "person")
    held = tmp_path / "held"
    held.mkdir()
    ImageOps.mirror(Image.open(IMAGES / "astronaut.png").convert("RGB")).save(held / "mirrored.jpg")  # never calibrated
    result = run("quantize", str(model), "--calibration", str(_calibration(tmp_path / "cal")), "--held-out", str(held))
    assert result.returncode == 0, result.stderr
    assert "calibrated on 9 images, report on 1 held-out images" in result.stdout
    speed = re.search(r"FP32 ([\d.]+) ms, INT8 ([\d.]+) ms \(([\d.]+)x\)", result.stdout)
    assert speed and float(speed.group(3)) > 0
    assert "1/1 FP32 boxes found by INT8 at IoU >= 0.5 with the same class (100.0%)" in result.stdout
    int8 = model.with_suffix(".int8.onnx")
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    served = tmp_path / "served"
    (served / "person" / "1").mkdir(parents=True)
    shutil.copy(int8, served / "person" / "1" / "model.onnx")
    shutil.copy(tmp_path / "person" / "model.yaml", served / "person" / "model.yaml")
    answer = run("predict", str(held / "mirrored.jpg"), "--model", str(served / "person"))
    assert json.loads(answer.stdout)["images"][0]["results"][0]["name"] == "person"


@pytest.mark.slow  # a second whole quantization of the person detector
def test_held_out_images_default_to_every_fourth_and_metadata_is_kept(tmp_path):
    model = tmp_path / "yolo11.onnx"
    shutil.copy(YOLO11, model)
    result = run(
        "quantize", str(model), "--calibration", str(_calibration(tmp_path / "cal")), "--out", str(tmp_path / "q.onnx")
    )
    assert result.returncode == 0, result.stderr
    assert "calibrated on 7 images, report on 2 held-out images" in result.stdout
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert metadata["names"].startswith("{0: 'person'") and metadata["task"] == "detect"


def test_quantize_needs_an_image_model_and_images(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images" in run("quantize", str(YOLO11), "--calibration", str(tmp_path / "empty")).stderr


def _tinted(folder, photos, tints):
    """Each photo tinted each way (the other channels dimmed to 30%): images with a clear dominant colour."""
    folder.mkdir()
    for photo in photos:
        pixels = np.asarray(Image.open(photo).convert("RGB"), np.float32)
        for tint in tints:
            dimmed = pixels * np.where(np.arange(3) == "rgb".index(tint), 1.0, 0.3)
            Image.fromarray(dimmed.astype(np.uint8)).save(folder / f"{photo.stem}-{tint}.jpg", quality=92)
    return sorted(folder.iterdir())


def test_a_classifier_is_compared_by_its_top_class(tmp_path):
    """A classifier of the dominant colour gives each tinted held-out photo a clear top-1 (red, green and blue
    all occur): the INT8 model must give the same one on every image, and the comparison must tell a model that
    disagrees (the classes permuted) from one that agrees."""
    from kakehashi.quantize import evaluate
    from onnx_builders import colour_classifier

    model = colour_classifier(tmp_path / "colour.onnx")
    calibration = _tinted(tmp_path / "cal", sorted(IMAGES.glob("*.png")), "rgb")
    held = _tinted(tmp_path / "held", [IMAGES / "coffee.png"], "rgb")
    for path in held:  # never calibrated on: mirrored
        ImageOps.mirror(Image.open(path)).save(path)
    result = run("quantize", str(model), "--calibration", str(calibration[0].parent), "--held-out", str(held[0].parent))
    assert result.returncode == 0, result.stderr
    assert "calibrated on 9 images, report on 3 held-out images" in result.stdout
    assert "held-out images: INT8 gives FP32's top-1 class on 3/3 (100.0%)" in result.stdout, result.stdout
    int8 = tmp_path / "colour.int8.onnx"
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    tops = [
        json.loads(run("predict", str(path), "--model", str(int8)).stdout)["images"][0]["results"][0]["name"]
        for path in held
    ]
    assert tops == ["blue", "green", "red"]  # coffee-b, coffee-g, coffee-r: three different answers
    permuted = colour_classifier(tmp_path / "permuted.onnx", order=(1, 2, 0))
    report = evaluate(model, permuted, None, held, 0.25)
    assert report.classify and (report.matched, report.boxes) == (0, 3)  # every top-1 differs: none agree
    assert (evaluate(model, int8, None, held, 0.25).matched, report.boxes) == (3, 3)


def test_agreement_matching():
    from kakehashi.quantize import compare

    def box(cls, x1, y1, x2, y2, confidence=0.9):
        return {"class": cls, "confidence": confidence, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}

    rotated = {
        "class": 0,
        "confidence": 0.8,
        "box": {"x1": 10, "y1": 0, "x2": 20, "y2": 10, "x3": 10, "y3": 20, "x4": 0, "y4": 10},
    }
    reference = [[box(0, 0, 0, 10, 10), box(1, 50, 50, 60, 60)], [rotated]]
    candidate = [[box(0, 1, 1, 10, 10, 0.85), box(0, 50, 50, 60, 60)], [dict(rotated, confidence=0.7)]]
    matched, total, extra, deltas = compare(reference, candidate)
    assert (matched, total, extra) == (2, 3, 1)  # the second box changed class: not matched, and one extra
    assert [round(d, 6) for d in deltas] == [-0.05, -0.1]
    top = [[{"class": 3, "confidence": 0.6}, {"class": 1, "confidence": 0.2}], [{"class": 2, "confidence": 0.5}]]
    assert compare(top, [[{"class": 3, "confidence": 0.55}], [{"class": 4, "confidence": 0.5}]], classify=True)[:3] == (
        1,
        2,
        0,
    )
