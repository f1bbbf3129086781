"""Pipelines (`pipeline.yaml`): detect → crop → classify, and tile → detect → merge, over other models of the
repository, each step through its member's own batcher; checked against images painted so the right answer is
known without Kakehashi (regions of one colour where a constant detector reports its boxes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import numpy as np
import pytest
from PIL import Image

from onnx_builders import colour_classifier, constant_model

ONNX_RUNTIME = "backend: onnxruntime\n"
NAMES = "{0: 'part', 1: 'defect'}"
# the detector's boxes (x1, y1, x2, y2, score, class) at its 640 px input, which a 640x640 image maps 1:1
RED_PART = (40, 40, 200, 200, 0.9, 0)
BLUE_DEFECT = (300, 300, 500, 460, 0.8, 1)
TINY_PART = (560, 20, 570, 30, 0.7, 0)  # 10 px: below the crop's min_size
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def _detector(path, rows, size: int):
    output = np.asarray([rows], np.float32)
    metadata = {"task": "detect", "names": NAMES, "stride": "32", "imgsz": f"[{size}, {size}]", "end2end": "True"}
    return constant_model(path, {"output0": output}, metadata=metadata)


def _member(root, name: str, build, yaml: str = "") -> None:
    build(root / name / "1" / "model.onnx")
    (root / name / "model.yaml").write_text(ONNX_RUNTIME + yaml)


def _painted() -> bytes:
    """640x640 grey, the red part's box painted red and the defect's blue."""
    pixels = np.full((640, 640, 3), 128, np.uint8)
    for (x1, y1, x2, y2, _, _), colour in ((RED_PART, "red"), (BLUE_DEFECT, "blue")):
        pixels[y1:y2, x1:x2] = COLOURS[colour]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    _member(root, "parts", lambda path: _detector(path, [RED_PART, BLUE_DEFECT, TINY_PART], 640))
    # crops wait up to 200 ms for others, so those of one request and of concurrent ones are batched together
    _member(
        root,
        "colour",
        colour_classifier,
        "batching: {max_batch_size: 8, preferred_batch_size: 8, max_queue_delay_ms: 200}\n",
    )
    _member(root, "tiles", lambda path: _detector(path, [(100, 100, 200, 200, 0.9, 0)], 320))
    _member(root, "whole-tile", lambda path: _detector(path, [(0, 0, 320, 320, 0.9, 0)], 320))
    pipelines = {
        "inspect": "detect: {model: parts}\ncrop: {min_size: 16}\nclassify: {model: colour, top_k: 2}\n",
        "defects": "detect: {model: parts}\ncrop: {classes: [1]}\nclassify: {model: colour, version: 1}\n",
        "tiled": "detect: {model: tiles}\ntile: {size: 320, overlap: 0}\n",
        "merged": "detect: {model: whole-tile}\ntile: {size: 320, overlap: 0.5, iou: 0.3}\n",
        "broken": "detect: {model: nowhere}\n",
        "typo": "detect: {model: parts}\nclasify: {model: colour}\n",
    }
    for name, text in pipelines.items():
        (root / name).mkdir()
        (root / name / "pipeline.yaml").write_text(text)
    return root


@pytest.fixture(scope="module")
def server(serve_module, repository):
    return serve_module(repository, "--model-control", "explicit", wait="/v2/health/live")


def _predict(server, model: str, image: bytes) -> dict:
    response = server.client.post(f"/v1/models/{model}/predict", content=image, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()


def _ready(server, model: str) -> None:
    server.wait_until(f"/v2/models/{model}/ready", timeout=60)


def _stats(server, model: str) -> dict:
    [stats] = server.client.get(f"/v2/models/{model}/stats").json()["model_stats"]
    return stats


def test_each_detection_carries_its_crops_classes(server):
    _ready(server, "inspect")
    [image] = _predict(server, "inspect", _painted())["images"]
    results = {(r["box"]["x1"], r["box"]["y1"]): r for r in image["results"]}
    assert set(results) == {(40, 40), (300, 300), (560, 20)}
    red, blue, tiny = results[(40, 40)], results[(300, 300)], results[(560, 20)]
    assert [c["name"] for c in red["classification"]][:1] == ["red"] and len(red["classification"]) == 2
    assert blue["classification"][0]["name"] == "blue" and blue["name"] == "defect"
    assert "classification" not in tiny  # 10 px, under min_size
    defects = {r["name"]: r for r in _predict(server, "defects", _painted())["images"][0]["results"]}
    assert "classification" not in defects["part"] and defects["defect"]["classification"][0]["name"] == "blue"


def test_a_pipelines_answer_is_the_documented_predict_answer(server):
    _ready(server, "inspect")
    answer = _predict(server, "inspect", _painted())
    document = server.client.get("/openapi.json").json()
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/Predictions", **document})
    assert list(validator.iter_errors(answer)) == []
    assert any("classification" in result for result in answer["images"][0]["results"])


def test_crops_of_concurrent_requests_are_batched_by_the_classifier(server):
    _ready(server, "inspect")
    before = _stats(server, "colour")
    requests = 6
    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(lambda _: _predict(server, "inspect", _painted()), range(requests)))
    assert all(len(a["images"][0]["results"]) == 3 for a in answers)
    after = _stats(server, "colour")
    crops = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]
    assert crops == 2 * requests and batches < crops  # two crops per request, run in fewer batches


def test_tiles_are_detected_each_and_boxes_come_back_in_the_images_pixels(server):
    _ready(server, "tiled")
    before = _stats(server, "tiles")["inference_count"]
    image = io.BytesIO()
    Image.new("RGB", (640, 640), (90, 90, 90)).save(image, "PNG")
    results = _predict(server, "tiled", image.getvalue())["images"][0]["results"]
    corners = sorted((r["box"]["x1"], r["box"]["y1"], r["box"]["x2"], r["box"]["y2"]) for r in results)
    expected = sorted((100 + x, 100 + y, 200 + x, 200 + y) for x in (0, 320) for y in (0, 320))
    assert corners == expected
    assert _stats(server, "tiles")["inference_count"] - before == 4


def test_overlapping_tiles_detections_are_merged(server):
    _ready(server, "merged")
    image = io.BytesIO()
    Image.new("RGB", (640, 640), (90, 90, 90)).save(image, "PNG")
    results = _predict(server, "merged", image.getvalue())["images"][0]["results"]
    # nine tiles 160 px apart, each reporting its whole self, all with the same score (so taken in tile order, row
    # by row): a box overlaps its side neighbours by IoU 1/3 (> 0.3: suppressed), its diagonal ones by 1/7 (kept).
    # (0,0) removes (160,0) and (0,160); (320,0) removes (320,160); (160,160) removes (160,320); then (0,320) and
    # (320,320) are left, overlapping only diagonally
    corners = sorted((r["box"]["x1"], r["box"]["y1"]) for r in results)
    assert corners == [(0, 0), (0, 320), (160, 160), (320, 0), (320, 320)]


def test_a_bad_pipeline_is_unavailable_with_its_reason(server):
    _ready(server, "inspect")
    index = {row["name"]: row for row in server.client.post("/v2/repository/index", json={}).json()}
    assert index["broken"]["state"] == "UNAVAILABLE" and "step 'detect'" in index["broken"]["reason"]
    assert "nowhere" in index["broken"]["reason"]
    assert "unknown key 'clasify'" in index["typo"]["reason"]
    refused = server.client.post("/v1/models/broken/predict", content=_painted(), headers={"content-type": "image/png"})
    assert refused.status_code == 503 and "broken" in refused.json()["error"]


def test_a_pipeline_takes_images_not_tensors_and_says_where_to_send_them(server):
    _ready(server, "inspect")
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    answer = server.client.post("/v2/models/inspect/infer", json=body)
    assert answer.status_code == 400 and "/v1/models/inspect/predict" in answer.json()["error"]
    metadata = server.client.get("/v2/models/inspect").json()
    assert metadata["platform"] == "kakehashi_pipeline" and metadata["inputs"][0]["name"] == "image"


def test_reloading_a_member_under_load_drops_no_request(server):
    _ready(server, "inspect")
    stop, answers = threading.Event(), []

    def keep_asking() -> None:
        while not stop.is_set():
            answers.append(
                server.client.post(
                    "/v1/models/inspect/predict", content=_painted(), headers={"content-type": "image/png"}
                )
            )

    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(keep_asking) for _ in range(3)]
        for _ in range(2):
            assert server.client.post("/v2/repository/models/colour/load").status_code == 200
        stop.set()
        for each in running:
            each.result()
    assert answers and all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    assert all(
        r["classification"][0]["name"] in ("red", "blue")
        for a in answers
        for r in a.json()["images"][0]["results"]
        if "classification" in r
    )


def test_a_batch_job_runs_the_pipeline_in_process(repository, tmp_path):
    (tmp_path / "in").mkdir()
    for index in range(3):
        (tmp_path / "in" / f"{index}.png").write_bytes(_painted())
    out = tmp_path / "out.jsonl"
    command = ["batch", str(tmp_path / "in"), "--model", str(repository), "--name", "inspect", "--out", str(out)]
    result = subprocess.run([sys.executable, "-m", "kakehashi", *command, "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        named = {r["name"]: r for r in line["results"]}
        assert named["defect"]["classification"][0]["name"] == "blue"


def test_over_grpc_a_pipeline_has_metadata_and_refuses_tensors_naming_predict(server):
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    _ready(server, "inspect")
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        assert client.is_model_ready("inspect")
        assert client.get_model_metadata("inspect").platform == "kakehashi_pipeline"
        tensor = triton_grpc.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"x"], dtype=object))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("inspect", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "/v1/models/inspect/predict" in refused.value.message()
