"""A server's first start of a model on a machine serves at once on a safe default (f32 on ONNX Runtime, batches of
one) and measures the runtimes, precisions and batch sizes after it is READY, then switches without failing a
request; later starts reuse what it found."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import IMAGES, YOLO11
from kakehashi.settings import default_model_path

SWITCHED = "measured in the background; now serving"


def _folder(root: Path) -> Path:
    folder = root / "yolo"
    (folder / "1").mkdir(parents=True)
    shutil.copy(YOLO11, folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text("batching: {max_batch_size: 4}\ninput: {size: 320}\n")
    return folder


def test_a_first_start_serves_at_once_then_switches_with_no_failed_request(serve, tmp_path, monkeypatch):
    cache = tmp_path / "decisions"
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(cache))
    folder = _folder(tmp_path)
    server = serve(folder)
    image = (IMAGES / "coffee.png").read_bytes()
    before, after = 0, 0
    deadline = time.monotonic() + 180
    while SWITCHED not in server.log():
        assert time.monotonic() < deadline, f"no switch after measuring: {server.log()}"
        answer = server.client.post("/v1/models/yolo/predict", content=image, headers={"content-type": "image/png"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["shape"] == [400, 600]
        before += 1
    for _ in range(5):
        answer = server.client.post("/v1/models/yolo/predict", content=image, headers={"content-type": "image/png"})
        assert answer.status_code == 200 and answer.json()["images"][0]["shape"] == [400, 600], answer.text
        after += 1
    assert before >= 1  # requests were answered while it measured
    log = server.log()
    at_once = log.index("serving at once on onnxruntime f32")
    assert at_once < log.index("version 1 ready in") < log.index(" per inference") < log.index(SWITCHED)
    assert "batches of up to 1" in log[at_once : log.index(SWITCHED)]  # the safe default until measured
    [stored] = cache.glob("*.json")
    decision = json.loads(stored.read_text())
    runtime = server.client.get("/v2/models/yolo/config").json()["parameters"]["runtime"]["string_value"]
    assert runtime.startswith(decision["runtime"])
    server.stop()

    again = serve(folder)
    log = again.log()
    assert "load decisions reused" in log and "serving at once" not in log
    config = again.client.get("/v2/models/yolo/config").json()
    assert config["parameters"]["runtime"]["string_value"].startswith(decision["runtime"])
    assert config["dynamic_batching"]["preferred_batch_size"] == [decision["batch_size"]]


@pytest.mark.parametrize("precision", ["int8"])
def test_a_precision_named_is_checked_before_serving_not_after(serve, tmp_path, monkeypatch, precision):
    """A named precision must pass its check first, so it is never served unchecked: no serving at once."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = tmp_path / "person"  # a real detector: it finds the astronaut on the calibration images
    shutil.copytree(default_model_path() / "ssdlite-person", folder)
    shutil.copy(folder / "1" / "model.onnx", folder / "1" / "model.int8.onnx")  # the same answers: it agrees
    server = serve(folder, "--precision", precision)
    log = server.log()
    assert "serving at once" not in log and f"precision {precision} (agrees with f32" in log
