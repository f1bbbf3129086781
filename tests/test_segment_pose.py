"""Segmentation and pose decoded exactly from small graphs with known outputs: masks (polygon and RLE) and
keypoints mapped through the letterbox to the original image, to the pixel."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import image_bytes
from inprocess import load, predict
from onnx_builders import constant_model

NAMES = "{0: 'a', 1: 'b'}"
WIDE = image_bytes(1280, 640)  # letterboxed to 640x640: scale 0.5, 160 px above and below
PROTOS = np.full((1, 2, 160, 160), -10.0, np.float32)
PROTOS[0, 0, :, :80] = 10.0  # channel 0: the left half of the input (x < 320) is inside


def _raw_segment() -> np.ndarray:
    """[1, 4 + 2 classes + 2 coefficients, 3]: A (class 0, coefficients 1, 0), B (below conf), C (class 1)."""
    out = np.zeros((1, 8, 3), np.float32)
    out[0, :, 0] = (320, 320, 200, 100, 0.9, 0.0, 1.0, 0.0)  # box 220..420 x 270..370 → left half of it
    out[0, :, 1] = (100, 300, 20, 20, 0.1, 0.0, 1.0, 0.0)
    out[0, :, 2] = (500, 320, 40, 40, 0.0, 0.8, 1.0, 0.0)  # right half of the input: an empty mask
    return out


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "seg.onnx"
    meta = {"names": NAMES, "stride": "32", "task": "segment", "imgsz": "[640, 640]", "end2end": "False"}
    return load(constant_model(path, {"output0": _raw_segment(), "output1": PROTOS}, metadata=meta))


def test_segment_polygon_to_the_pixel(segmenter):
    assert segmenter.task.kind == "segment" and segmenter.task.head.name == "ultralytics"
    first, second = predict(segmenter, WIDE)[0].results
    assert (first["name"], first["box"]) == ("a", {"x1": 440.0, "y1": 220.0, "x2": 840.0, "y2": 420.0})
    outline = first["segments"]
    # the mask is the box's left part up to x = 640 (the prototypes' edge at input x = 320), all its rows
    assert (min(outline["x"]), max(outline["x"]), min(outline["y"]), max(outline["y"])) == (440, 639, 220, 419)
    assert sorted(zip(outline["x"], outline["y"])) == [(440, 220), (440, 419), (639, 220), (639, 419)]
    assert second["name"] == "b" and second["segments"] == {"x": [], "y": []}  # its box is where channel 0 is out


def test_segment_rle_is_exact(segmenter):
    first = predict(segmenter, WIDE, masks="rle")[0].results[0]
    rle = first["rle"]
    assert rle["size"] == [640, 1280] and "segments" not in first
    flat, value, position = np.zeros(640 * 1280, bool), False, 0
    for count in rle["counts"]:
        flat[position : position + count] = value
        position, value = position + count, not value
    assert position == 640 * 1280
    expected = np.zeros((640, 1280), bool)
    expected[220:420, 440:640] = True
    assert np.array_equal(flat.reshape((1280, 640)).T, expected)


def test_segment_end2end(tmp_path):
    rows = np.zeros((1, 2, 8), np.float32)
    rows[0, 0] = (220, 270, 420, 370, 0.9, 0, 1.0, 0.0)
    meta = {"names": NAMES, "stride": "32", "task": "segment", "end2end": "True"}
    handle = load(constant_model(tmp_path / "e2e.onnx", {"output0": rows, "output1": PROTOS}, metadata=meta))
    assert handle.task.head.name == "end2end"
    [only] = predict(handle, WIDE)[0].results
    outline = only["segments"]  # the same mask as above: an empty (or partial) outline fails
    assert sorted(zip(outline["x"], outline["y"])) == [(440, 220), (440, 419), (639, 220), (639, 419)]


def _pose_rows() -> np.ndarray:
    """[1, 4 + 2 classes + 2 keypoints x 3, 2]: one person-like detection with known keypoints."""
    out = np.zeros((1, 12, 2), np.float32)
    out[0, :, 0] = (320, 320, 100, 100, 0.9, 0.0, 300, 300, 0.8, 340, 330, 0.2)
    out[0, :, 1] = (10, 200, 30, 30, 0.0, 0.7, -20, 250, 0.9, 30, 900, 0.5)  # keypoints outside: clipped
    return out


def test_pose_keypoints_to_the_pixel(tmp_path):
    meta = {"names": NAMES, "stride": "32", "task": "pose", "kpt_shape": "[2, 3]", "end2end": "False"}
    handle = load(constant_model(tmp_path / "pose.onnx", {"output0": _pose_rows()}, metadata=meta))
    assert handle.task.kind == "pose" and handle.task.kpt_shape == (2, 3) and handle.task.names == ("a", "b")
    first, second = predict(handle, WIDE)[0].results
    assert first["keypoints"] == {"x": [600.0, 680.0], "y": [280.0, 340.0], "visible": [0.8, 0.2]}
    assert second["keypoints"] == {"x": [0.0, 60.0], "y": [180.0, 640.0], "visible": [0.9, 0.5]}


def test_pose_end2end_and_missing_kpt_shape(tmp_path):
    rows = np.zeros((1, 1, 12), np.float32)
    rows[0, 0] = (270, 270, 370, 370, 0.9, 1, 300, 300, 0.8, 340, 330, 0.2)
    meta = {"names": NAMES, "stride": "32", "task": "pose", "kpt_shape": "[2, 3]", "end2end": "True"}
    handle = load(constant_model(tmp_path / "e2e.onnx", {"output0": rows}, metadata=meta))
    [only] = predict(handle, WIDE)[0].results
    assert only["name"] == "b" and only["keypoints"]["x"] == [600.0, 680.0]
    del meta["kpt_shape"]
    constant_model(tmp_path / "bad" / "1" / "model.onnx", {"output0": rows}, metadata=meta)
    bad = load(tmp_path / "bad")
    assert not bad.ready and "needs 'kpt_shape' [keypoints, 2 or 3] in model.yaml or the model's metadata" in bad.reason


def _obb_rows() -> np.ndarray:
    """[1, 4 + 2 classes + angle, 4]: A vertical (class a), B nearly A (suppressed), C = A as class b, D low."""
    out = np.zeros((1, 7, 4), np.float32)
    out[0, :, 0] = (320, 320, 100, 40, 0.9, 0.0, np.pi / 2)
    out[0, :, 1] = (322, 320, 100, 40, 0.8, 0.0, np.pi / 2 + 0.05)
    out[0, :, 2] = (320, 320, 100, 40, 0.0, 0.7, np.pi / 2)
    out[0, :, 3] = (100, 100, 10, 10, 0.1, 0.0, 0.0)
    return out


def test_oriented_boxes_rotated_nms_and_corners(tmp_path):
    meta = {"names": NAMES, "stride": "32", "task": "obb", "imgsz": "[640, 640]"}
    handle = load(constant_model(tmp_path / "obb.onnx", {"output0": _obb_rows()}, metadata=meta))
    assert handle.task.kind == "obb" and handle.task.names == ("a", "b")
    first, second = predict(handle, WIDE)[0].results
    assert [(r["name"], r["confidence"]) for r in (first, second)] == [("a", 0.9), ("b", 0.7)]
    # 100 x 40 turned 90°: 40 wide, 100 tall around (320, 320) in the input → (640, 320) in the original
    assert first["box"] == pytest.approx(
        {"x1": 600, "y1": 420, "x2": 680, "y2": 420, "x3": 680, "y3": 220, "x4": 600, "y4": 220}, abs=1e-3
    )


def test_probabilistic_iou():
    from kakehashi.tasks.nms import probiou

    box = np.array([50, 50, 40, 20, 0.3])
    others = np.array(
        [
            [50, 50, 40, 20, 0.3],
            [50, 50, 40, 20, 0.3 + np.pi],
            [500, 500, 40, 20, 0.3],
            [50, 50, 20, 40, 0.3 + np.pi / 2],
        ]
    )
    same, flipped, far, swapped = probiou(box, others)
    assert same == pytest.approx(1, abs=1e-3) and flipped == pytest.approx(1, abs=1e-3)
    assert swapped == pytest.approx(1, abs=1e-3) and far < 1e-3  # w/h swapped with a quarter turn: the same box


def test_triton_config_metadata_for_pose_says_what_ultralytics_needs(tmp_path):
    import ast

    from kakehashi.protocols.triton_config import model_config

    meta = {"names": NAMES, "stride": "32", "task": "pose", "kpt_shape": "[2, 3]", "end2end": "False"}
    handle = load(constant_model(tmp_path / "pose.onnx", {"output0": _pose_rows()}, metadata=meta))
    metadata = ast.literal_eval(model_config(handle)["parameters"]["metadata"]["string_value"])
    assert metadata["task"] == "pose" and metadata["kpt_shape"] == [2, 3] and metadata["end2end"] is False


def test_a_mask_of_several_regions_gives_one_outline_through_all_of_them():
    """As Ultralytics' `Masks.xy`: every region's outline is in the one polygon, joined at their closest points."""
    from kakehashi.tasks.segment import polygon

    mask = np.zeros((40, 60), bool)
    mask[20:35, 40:55] = True
    mask[5:15, 5:15] = True
    mask[2:6, 50:58] = True
    outline = polygon(mask, 100, 200, 1)
    points = list(zip(outline["x"], outline["y"]))
    corners = {
        (x + 100.0, y + 200.0)
        for x, y in [
            (40, 20),
            (40, 34),
            (54, 34),
            (54, 20),
            (5, 5),
            (5, 14),
            (14, 14),
            (14, 5),
            (50, 2),
            (50, 5),
            (57, 5),
            (57, 2),
        ]
    }
    assert set(points) == corners and points[0] == points[-1]  # each region's corners, one closed path
    bridges = [(a, b) for a, b in zip(points, points[1:]) if abs(a[0] - b[0]) + abs(a[1] - b[1]) > 15]
    assert sorted(bridges) == sorted(
        [
            ((140.0, 220.0), (114.0, 214.0)),
            ((114.0, 205.0), (150.0, 205.0)),
            ((150.0, 205.0), (114.0, 205.0)),
            ((114.0, 214.0), (140.0, 220.0)),
        ]
    )
    single = np.zeros((10, 10), bool)
    single[2:5, 3:8] = True
    assert list(zip(*polygon(single, 0, 0, 1).values())) == [(3.0, 2.0), (3.0, 4.0), (7.0, 4.0), (7.0, 2.0)]
