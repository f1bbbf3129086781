"""Precision chosen by the model's own answers: a precision other than f32 serves only if its answers on calibration
images agree with f32's (same classes, boxes and confidences within tolerances, no detection lost or added).

The int8 candidates here are the bundled person detector with its outputs drifted by a known amount, saved where
`kakehashi quantize` writes an INT8 copy (`model.int8.onnx`): a real model whose answers move as much as we say."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import IMAGES
from inprocess import load, predict
from kakehashi import backends
from kakehashi.backends.registry import RUNTIMES
from kakehashi.errors import Unavailable
from kakehashi.settings import default_model_path
from kakehashi.tasks.agreement import Tolerances, compare_detections, compare_outputs, compare_top1

# -- the comparison ---------------------------------------------------------------------------------------------


def _box(x1: float, y1: float, size: float = 100, confidence: float = 0.9, cls: int = 0) -> dict:
    return {
        "class": cls,
        "name": "person",
        "confidence": confidence,
        "box": {"x1": x1, "y1": y1, "x2": x1 + size, "y2": y1 + size},
    }


def _compare(reference: list[dict], candidate: list[dict], **tolerances: float):
    return compare_detections([reference], [candidate], 0.25, Tolerances(**tolerances), ["photo.jpg"])


def test_what_bf16_does_to_a_real_detector_is_accepted():
    # moved by 1.45 px on each axis (IoU 0.944) and confidence down by 0.063: the measured worst case
    reference = [_box(0, 0), _box(300, 300, 50, 0.5)]
    found = _compare(reference, [_box(1.45, 1.45, confidence=0.837), _box(300, 300, 50, 0.52)])
    assert found.agrees, found.problems
    assert found.compared == 2 and 0.943 < found.least_iou < 0.945
    assert found.largest_confidence_change == pytest.approx(0.063)
    assert "2 detections, least box IoU 0.944, largest confidence change 0.063" in found.summary()


def test_a_lost_or_added_detection_or_another_class_is_refused():
    lost = _compare([_box(0, 0), _box(300, 300)], [_box(0, 0)])
    assert not lost.agrees and lost.problems == ["lost person 0.90 on photo.jpg"]
    added = _compare([_box(0, 0)], [_box(0, 0), _box(300, 300, confidence=0.3)])
    assert added.problems == ["added person 0.30 on photo.jpg"]
    other_class = _compare([_box(0, 0)], [_box(0, 0, cls=1)])
    assert other_class.problems[0] == "lost person 0.90 on photo.jpg"
    moved = _compare([_box(0, 0)], [_box(20, 20)])
    assert moved.problems[0] == "lost person 0.90 on photo.jpg (nearest box at IoU 0.471)"
    assert not _compare([_box(0, 0)], [_box(0, 0, confidence=0.75)]).agrees  # confidence moved 0.15


def test_crossing_the_threshold_by_less_than_the_tolerance_is_not_a_loss():
    # f32 finds it at 0.27, the other precision at 0.22 (decoded at the threshold lowered by the tolerance)
    assert _compare([_box(0, 0, confidence=0.27)], [_box(0, 0, confidence=0.22)]).agrees
    assert not _compare([_box(0, 0, confidence=0.27)], [_box(0, 0, confidence=0.22)], confidence=0.02).agrees


def test_tolerances_are_configurable():
    shifted = ([_box(0, 0)], [_box(2, 2)])  # IoU 0.924
    assert _compare(*shifted).agrees
    assert not _compare(*shifted, box_iou=0.95).agrees


def test_nothing_to_compare_is_no_agreement():
    found = _compare([], [])
    assert not found.agrees and "nothing to compare" in found.problems[0]
    assert not compare_top1([[]], [[]], Tolerances(), ["a.jpg"]).agrees


def test_classifiers_compare_the_top_class_and_tensors_their_outputs():
    def top(cls: int, confidence: float) -> list[dict]:
        return [{"class": cls, "name": str(cls), "confidence": confidence}]

    tolerances, labels = Tolerances(), ["a.jpg", "b.jpg"]
    assert compare_top1([top(3, 0.6), top(1, 0.9)], [top(3, 0.55), top(1, 0.92)], tolerances, labels).agrees
    changed = compare_top1([top(3, 0.6), top(1, 0.9)], [top(3, 0.55), top(2, 0.9)], tolerances, labels)
    assert changed.problems == ["top-1 1 0.90 became 2 0.90 on b.jpg"]
    expected = {"y": np.array([10.0, -20.0, 5.0])}
    assert compare_outputs([expected], [{"y": np.array([10.1, -20.2, 5.0])}], tolerances).agrees  # 0.01 of 20
    assert not compare_outputs([expected], [{"y": np.array([10.0, -20.0, 6.0])}], tolerances).agrees  # 0.05
    labels = {"label": np.array([3, 70, 12])}
    assert not compare_outputs([labels], [{"label": np.array([4, 70, 12])}], tolerances).agrees  # integers: equal
    nan = compare_top1([top(3, 0.6)], [top(3, float("nan"))], tolerances, ["a.jpg"])
    assert not nan.agrees


# -- at load -----------------------------------------------------------------------------------------------------


def _drifted(source: Path, target: Path, score_scale: float, box_shift: float) -> None:
    """`source` (the person detector) with its scores multiplied and its boxes (normalised 0–1) moved."""
    model = onnx.load(str(source))
    graph = model.graph
    for output, op, value in (("detection_scores:0", "Mul", score_scale), ("detection_boxes:0", "Add", box_shift)):
        inner = output + "_f32"
        for node in graph.node:
            node.output[:] = [inner if name == output else name for name in node.output]
            node.input[:] = [inner if name == output else name for name in node.input]
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), output + "_drift"))
        graph.node.append(helper.make_node(op, [inner, output + "_drift"], [output]))
    onnx.save(model, str(target))


@pytest.fixture
def person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The person detector's folder, with its own decisions cache."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = tmp_path / "person"
    shutil.copytree(default_model_path() / "ssdlite-person", folder)
    return folder


def _with_int8(folder: Path, score_scale: float, box_shift: float, yaml: str = "") -> Path:
    _drifted(folder / "1" / "model.onnx", folder / "1" / "model.int8.onnx", score_scale, box_shift)
    (folder / "model.yaml").write_text((folder / "model.yaml").read_text() + yaml)
    return folder


ASTRONAUT = (IMAGES / "astronaut.png").read_bytes()


def _person_box(handle) -> dict:
    [found] = [r for r in predict(handle, ASTRONAUT)[0].results if r["name"] == "person"]
    return found


@pytest.fixture
def int8_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timings where int8 is the fastest (on this machine the drifted copies cost what f32 costs)."""
    monkeypatch.setattr(
        backends, "_seconds_of", lambda choice, instances, feeds: 0.01 if choice.precision == "int8" else 0.02
    )


def test_a_busy_spell_while_one_candidate_is_timed_does_not_decide(person, monkeypatch):
    # int8 costs 10 ms, f32 15 ms, the rest 50; the machine is busy (+20 ms) during int8's first two timings: one
    # timing per candidate made int8 look slower than f32, rounds taking turns find it faster
    cost, busy = {"int8": 0.01, "f32": 0.015}, {"int8": 2}

    def seconds_of(choice, instances, feeds) -> float:
        spell = busy.get(choice.precision, 0) > 0
        busy[choice.precision] = busy.get(choice.precision, 0) - 1
        return cost.get(choice.precision, 0.05) + (0.02 if spell else 0.0)

    monkeypatch.setattr(backends, "_seconds_of", seconds_of)
    _with_int8(person, score_scale=0.97, box_shift=0.004)
    handle = load(person)
    assert handle.ready and handle.choice.precision == "int8", handle.precision


def test_auto_refuses_a_faster_int8_copy_whose_answers_drift_and_serves_f32(person, int8_fastest, caplog):
    _with_int8(person, score_scale=0.5, box_shift=0.0)
    with caplog.at_level(logging.INFO):
        handle = load(person)
    assert handle.ready and handle.choice.precision == "f32"
    assert "int8 refused: disagrees with f32: person 0.89 became 0.45 on astronaut.jpg" in handle.precision
    assert "int8 is faster but disagrees with f32" in caplog.text
    assert _person_box(handle)["confidence"] > 0.8  # f32's answer, not the halved one


def test_auto_serves_a_faster_int8_copy_that_agrees(person, int8_fastest):
    _with_int8(person, score_scale=0.97, box_shift=0.004)
    handle = load(person)
    assert handle.ready and handle.choice.precision == "int8"
    assert handle.precision.startswith("int8 (agrees with f32: 1 detections, least box IoU 0.9")


def test_int8_asked_for_serves_when_it_agrees_and_its_answers_are_served(person):
    _with_int8(person, score_scale=0.97, box_shift=0.004, yaml="precision: int8\n")
    handle = load(person)
    assert handle.ready and handle.choice.precision == "int8", handle.reason
    assert handle.precision.startswith("int8 (agrees with f32: 1 detections, least box IoU 0.9")
    served = _person_box(handle)
    (person / "model.yaml").write_text((person / "model.yaml").read_text().replace("precision: int8", "precision: f32"))
    (person / "1" / "model.int8.onnx").unlink()
    f32 = _person_box(load(person))
    assert served["confidence"] == pytest.approx(f32["confidence"] * 0.97, abs=1e-3)
    assert served["box"]["x1"] == pytest.approx(f32["box"]["x1"] + 0.004 * 512, abs=0.5)  # 512 px wide


def test_int8_asked_for_that_disagrees_fails_the_load_saying_why(person):
    _with_int8(person, score_scale=1.0, box_shift=0.05, yaml="precision: int8\n")
    handle = load(person)
    assert not handle.ready and handle.state.value == "UNAVAILABLE"
    assert "no precision asked for agrees with the model's f32 answers" in handle.reason
    assert "lost person 0.89 on astronaut.jpg (nearest box at IoU 0.8" in handle.reason


def test_int8_without_its_file_says_how_to_make_it(person):
    (person / "model.yaml").write_text((person / "model.yaml").read_text() + "precision: int8\n")
    handle = load(person)
    assert not handle.ready and "model.int8.onnx beside the model" in handle.reason
    assert "kakehashi quantize" in handle.reason


@pytest.mark.parametrize("precision", ["bf16", "f16"])
def test_a_float_precision_this_cpu_lacks_is_refused_naming_what_it_has(person, precision):
    (person / "model.yaml").write_text((person / "model.yaml").read_text() + f"precision: {precision}\n")
    handle = load(person)
    offered = [name for name, runtime in RUNTIMES.items() if runtime.available() and precision in runtime.precisions()]
    if offered:  # a CPU that has it: served, and checked against f32
        assert handle.choice.precision == precision or "disagrees" in handle.reason
    else:
        assert not handle.ready and f"precision {precision}: no runtime computes in it on this CPU" in handle.reason


def test_the_calibration_folder_of_model_yaml_is_used(person):
    """Images with no person in them leave nothing to compare: the check proves nothing, so int8 is refused, and
    the message says so (proof that those images, not the shipped ones, were used)."""
    (person / "calibration").mkdir()
    shutil.copy(IMAGES / "coffee.png", person / "calibration" / "coffee.png")
    _with_int8(person, score_scale=0.97, box_shift=0.0, yaml="precision: int8\nagreement: {images: calibration}\n")
    handle = load(person)
    assert not handle.ready
    assert "int8 refused: disagrees with f32: nothing to compare: the model finds nothing" in handle.reason


def test_a_missing_calibration_folder_is_a_configuration_error(person):
    (person / "model.yaml").write_text((person / "model.yaml").read_text() + "agreement: {images: nowhere}\n")
    with pytest.raises(
        Unavailable, match=r"key 'agreement.images': calibration folder .*/person/nowhere does not exist"
    ):
        load(person)


def test_the_choice_and_its_agreement_are_kept_with_the_load_decisions(person, caplog):
    _with_int8(person, score_scale=0.97, box_shift=0.004, yaml="precision: int8\n")
    first = load(person)
    [stored] = (person.parent / "decisions").glob("*.json")
    decision = json.loads(stored.read_text())
    assert decision["precision"] == "int8" and decision["agreement"] == first.agreement
    with caplog.at_level(logging.INFO):
        second = load(person)
    assert "load decisions reused" in caplog.text and second.precision == first.precision


def test_the_server_says_which_precision_serves_and_how_it_agreed(person, serve):
    """`serve --precision int8` for a model whose model.yaml does not choose; its configuration and the status page
    name the precision and the measured agreement, and the log says it."""
    _with_int8(person, score_scale=0.97, box_shift=0.004)
    server = serve(person, "--precision", "int8")
    parameters = server.client.get("/v2/models/person/config").json()["parameters"]
    assert parameters["precision"] == {"string_value": "int8"}
    agreement = parameters["precision_agreement"]["string_value"]
    assert agreement.startswith("agrees with f32: 1 detections, least box IoU 0.9")
    figures = server.client.get("/v1/status").json()["figures"]["person:1"]
    assert figures["precision"] == f"int8 ({agreement})"
    assert f"precision int8 ({agreement})" in server.log()
