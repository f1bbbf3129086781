"""Each detection head decodes known outputs exactly: confidence filter, NMS, and boxes mapped back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto

from conftest import image_bytes
from inprocess import load, predict
from onnx_builders import constant_model

NAMES = "{0: 'zero', 1: 'one', 2: 'two', 3: 'three'}"
ULTRALYTICS_META = {"names": NAMES, "stride": "32", "task": "detect", "imgsz": "[640, 640]", "end2end": "False"}

# a 1280x640 image letterboxed to 640x640: scale 0.5, 160 px of padding above and below
WIDE = image_bytes(1280, 640)


def _to_original(x1, y1, x2, y2):
    """Model-input pixels of the 640x640 letterbox of WIDE → original pixels (unclipped)."""
    return [x1 / 0.5, (y1 - 160) / 0.5, x2 / 0.5, (y2 - 160) / 0.5]


def _boxes(results):
    return [[round(r["box"][k], 3) for k in ("x1", "y1", "x2", "y2")] for r in results]


def _ultralytics_output(rows):
    """rows of (cx, cy, w, h, class, score) → a [1, 4 + 4, N] raw head."""
    out = np.zeros((1, 8, len(rows)), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


ROWS = [
    (320, 320, 100, 100, 0, 0.9),  # A: kept
    (325, 320, 100, 100, 0, 0.8),  # B: same class, IoU with A ≈ 0.9 → suppressed
    (320, 320, 100, 100, 1, 0.7),  # C: another class on top of A → kept (class-aware NMS)
    (500, 300, 50, 50, 2, 0.2),  # D: below conf
    (20, 200, 60, 40, 3, 0.6),  # E: crosses the left edge → clipped to x1 = 0
]


@pytest.fixture(scope="module")
def ultralytics_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("ultra") / "raw.onnx"
    return load(constant_model(path, {"output0": _ultralytics_output(ROWS)}, metadata=ULTRALYTICS_META))


def test_ultralytics_head_nms_and_mapping(ultralytics_model):
    assert ultralytics_model.task.head.name == "ultralytics"
    results = predict(ultralytics_model, WIDE)[0].results
    assert [(r["class"], r["name"], r["confidence"]) for r in results] == [
        (0, "zero", 0.9),
        (1, "one", 0.7),
        (3, "three", 0.6),
    ]
    assert _boxes(results) == [_to_original(270, 270, 370, 370), _to_original(270, 270, 370, 370), [0, 40, 100, 120]]


def test_ultralytics_head_parameters(ultralytics_model):
    def classes_of(**params):
        return [r["class"] for r in predict(ultralytics_model, WIDE, **params)[0].results]

    assert classes_of(iou=0.95) == [0, 0, 1, 3]  # B no longer suppressed
    assert classes_of(conf=0.1) == [0, 1, 3, 2]  # D now above the threshold
    assert classes_of(classes="1,3") == [1, 3]
    assert classes_of(max_det=2) == [0, 1]


def test_end2end_head_has_no_nms(tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (270, 270, 370, 370, 0.9, 0)
    rows[0, 1] = (275, 270, 375, 370, 0.8, 0)  # overlaps row 0 but an end-to-end head is already NMS-free
    rows[0, 2] = (10, 10, 20, 20, 0.1, 2)  # below conf
    handle = load(
        constant_model(tmp_path / "e2e.onnx", {"output0": rows}, metadata={**ULTRALYTICS_META, "end2end": "True"})
    )
    assert handle.task.head.name == "end2end"
    results = predict(handle, WIDE)[0].results
    assert [(r["class"], r["confidence"]) for r in results] == [(0, 0.9), (0, 0.8)]
    assert _boxes(results) == [_to_original(270, 270, 370, 370), _to_original(275, 270, 375, 370)]


def test_end2end_head_inferred_from_shape_without_metadata(tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (0, 160, 640, 480, 0.5, 1)
    handle = load(constant_model(tmp_path / "yolov10.onnx", {"output0": rows}))
    assert handle.task.head.name == "end2end"
    [result] = predict(handle, WIDE)[0].results
    assert result["box"] == {"x1": 0, "y1": 0, "x2": 1280, "y2": 640} and result["name"] == "1"


def _objectness_output(rows, count):
    """rows of (index, cx, cy, w, h, objectness, class, class score) → [1, count, 5 + 3]."""
    out = np.zeros((1, count, 8), np.float32)
    for index, cx, cy, w, h, obj, cls, score in rows:
        out[0, index, :5] = (cx, cy, w, h, obj)
        out[0, index, 5 + cls] = score
    return out


def test_yolov5_head_objectness_times_class_score(tmp_path):
    count = 3 * (80 * 80 + 40 * 40 + 20 * 20)  # 3 anchors per cell at 640
    out = _objectness_output(
        [
            (0, 320, 320, 100, 100, 0.9, 1, 0.9),  # 0.81 kept
            (1, 322, 320, 100, 100, 0.9, 1, 0.8),  # 0.72 suppressed by the first
            (2, 100, 300, 20, 20, 0.9, 2, 0.2),  # 0.18 below conf
            (3, 100, 300, 20, 20, 0.2, 0, 1.0),  # objectness below conf
        ],
        count,
    )
    handle = load(constant_model(tmp_path / "yolov5.onnx", {"output0": out}, input_shape=[1, 3, 640, 640]))
    assert handle.task.head.name == "yolov5"
    results = predict(handle, WIDE)[0].results
    assert [(r["class"], r["confidence"]) for r in results] == [(1, 0.81)]
    assert _boxes(results) == [_to_original(270, 270, 370, 370)]


def test_yolox_head_decodes_the_grid(tmp_path):
    count = 80 * 80 + 40 * 40 + 20 * 20
    out = _objectness_output(
        [
            (25 * 80 + 10, 0.5, 0.5, math.log(4), math.log(2), 0.9, 0, 0.8),  # stride 8, cell (x=10, y=25)
            (6400 + 20 * 40 + 7, 0.0, 0.0, 0.0, 0.0, 0.5, 2, 1.0),  # stride 16, cell (x=7, y=20)
        ],
        count,
    )
    handle = load(constant_model(tmp_path / "yolox.onnx", {"output": out}, input_shape=[1, 3, 640, 640]))
    assert handle.task.head.name == "yolox"
    results = predict(handle, WIDE, decimals=3)[0].results
    assert [(r["class"], r["confidence"]) for r in results] == [(0, 0.72), (2, 0.5)]
    # stride 8: centre ((0.5 + 10) * 8, (0.5 + 25) * 8) = (84, 204), size (4 * 8, 2 * 8) = (32, 16)
    # stride 16: centre (7 * 16, 20 * 16) = (112, 320), size (16, 16)
    expected = [_to_original(68, 196, 100, 212), _to_original(104, 312, 120, 328)]
    assert _boxes(results) == expected


def test_tf_object_detection_head(tmp_path):
    boxes = np.zeros((1, 100, 4), np.float32)
    scores = np.zeros((1, 100), np.float32)
    classes = np.ones((1, 100), np.float32)
    boxes[0, 0], scores[0, 0], classes[0, 0] = (0.1, 0.2, 0.5, 0.6), 0.9, 2  # label-map id 2 → class 1
    boxes[0, 1], scores[0, 1], classes[0, 1] = (0.0, 0.0, 1.0, 1.0), 0.1, 1  # below conf
    boxes[0, 2], scores[0, 2], classes[0, 2] = (0.0, 0.0, 0.5, 0.5), 0.95, 1  # beyond num_detections
    model = constant_model(
        tmp_path / "tfod.onnx",
        {
            "num_detections:0": np.asarray([2.0]),
            "detection_boxes:0": boxes,
            "detection_scores:0": scores,
            "detection_classes:0": classes,
        },
        input_name="image_tensor:0",
        input_shape=["n", "h", "w", 3],
        input_type=TensorProto.UINT8,
    )
    handle = load(model)
    assert handle.task.head.name == "tf-od" and handle.task.input.resize == "stretch"
    [result] = predict(handle, image_bytes(600, 400))[0].results
    assert result["class"] == 1 and result["confidence"] == 0.9
    assert result["box"] == {"x1": 120, "y1": 40, "x2": 360, "y2": 200}


def test_classifier_top_k_with_names(tmp_path):
    logits = np.log(np.asarray([[0.1, 0.6, 0.05, 0.25]], np.float32))
    path = tmp_path / "cls" / "1" / "model.onnx"
    constant_model(path, {"probs": logits}, input_shape=["batch", 3, 224, 224])
    (tmp_path / "cls" / "model.yaml").write_text("names: [cat, dog, bird, fish]\ndefaults: {top_k: 3}\n")
    handle = load(tmp_path / "cls")
    assert handle.kind == "classify" and handle.task.input.resize == "crop"
    results = predict(handle, image_bytes(300, 200))[0].results
    assert [(r["name"], r["class"]) for r in results] == [("dog", 1), ("fish", 3), ("cat", 0)]
    assert [r["confidence"] for r in results] == pytest.approx([0.6, 0.25, 0.1], abs=1e-5)
    assert len(predict(handle, image_bytes(300, 200), top_k=1)[0].results) == 1


def test_head_override_in_model_yaml(tmp_path):
    # a 3-column output that looks like nothing known: model.yaml says it is an end-to-end head
    rows = np.zeros((1, 10, 6), np.float32)
    rows[0, 0] = (0, 160, 64, 224, 0.75, 0)
    folder = tmp_path / "custom"
    constant_model(folder / "1" / "model.onnx", {"dets": rows}, input_shape=[1, 3, 640, 640])
    (folder / "model.yaml").write_text("head: end2end\nnames: [widget]\n")
    [result] = predict(load(folder), WIDE)[0].results
    assert result["name"] == "widget" and result["box"] == {"x1": 0, "y1": 0, "x2": 128, "y2": 128}
