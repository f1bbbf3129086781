"""`kakehashi quantize`: an INT8 model calibrated on images, served like the FP32 one, with a report of speed and
agreement on held-out images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import onnx
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


def test_held_out_images_default_to_every_fourth_and_metadata_is_kept(tmp_path):
    model = tmp_path / "yolo11.onnx"
    shutil.copy(YOLO11, model)
    result = run("quantize", str(model), "--calibration", str(_calibration(tmp_path / "cal")), "--out",
                 str(tmp_path / "q.onnx"))
    assert result.returncode == 0, result.stderr
    assert "calibrated on 7 images, report on 2 held-out images" in result.stdout
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert metadata["names"].startswith("{0: 'person'") and metadata["task"] == "detect"


def test_quantize_needs_an_image_model_and_images(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no images" in run("quantize", str(YOLO11), "--calibration", str(tmp_path / "empty")).stderr
