"""Regression tests for the attacks on the data plane (issue 14): sibling work of a refused request, a tensor that
broke an OpenVINO model until restart, faults of ours reported as the client's, impossible shapes, and batches
larger than the model's limit."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton_grpc
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import IMAGES, YOLO11
from onnx_builders import rows_of_three_model

COFFEE = (IMAGES / "coffee.png").read_bytes()


def _tiny_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{key}="{value}"' in line for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _binary_infer(client: httpx.Client, model: str, array: np.ndarray) -> httpx.Response:
    header = (
        b'{"inputs":[{"name":"images","datatype":"FP32","shape":'
        + str(list(array.shape)).encode()
        + b',"parameters":{"binary_data_size":'
        + str(array.nbytes).encode()
        + b'}}],"outputs":[{"name":"output0","parameters":{"binary_data":false}}]}'
    )
    return client.post(
        f"/v2/models/{model}/infer",
        content=header + array.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )


def _detections(server) -> tuple[list[int], list[dict]]:
    response = server.client.post("/v1/models/ov/predict", files={"file": ("c.png", COFFEE, "image/png")})
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    return image["shape"], image["results"]


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    ort = "backend: onnxruntime\nbatching: {max_batch_size: 4, preferred_batch_size: 4}\n"
    ov = "backend: openvino\nbatching: {max_batch_size: 8, preferred_batch_size: 8}\n"
    for name, yaml in (("ov", ov), ("ort", ort)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").symlink_to(YOLO11.resolve())
        (root / name / "model.yaml").write_text(yaml)
    return serve_module(root)


def test_a_corrupt_first_image_stops_its_siblings_and_holds_memory_flat(server):
    """64 parts, the first a corrupt PNG: each request is refused, its other images are not all decoded and run
    after the answer, and the server's memory stays flat (it reached 17 GB when the siblings ran on)."""
    parts = [("file", ("bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"))]
    parts += [("file", (f"{i}.jpg", _tiny_jpeg(i), "image/jpeg")) for i in range(63)]
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak.append(process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    requests = 20
    try:
        metrics_before = server.client.get("/metrics").text
        for _ in range(requests):
            response = server.client.post("/v1/models/ov/predict", files=parts)
            assert response.status_code == 400, response.text
            assert response.json()["error"].startswith("image 0: ")
            # the answer leaves only once every sibling is gone: nothing of this request waits in the queue
            assert _metric(server.client.get("/metrics").text, "kakehashi_queue_depth", model="ov") == 0
        metrics_after = server.client.get("/metrics").text
    finally:
        done.set()
        sampler.join()
    prepared = _metric(metrics_after, "kakehashi_preprocess_duration_seconds_count", model="ov") - _metric(
        metrics_before, "kakehashi_preprocess_duration_seconds_count", model="ov"
    )
    inferred = _metric(metrics_after, "kakehashi_batch_size_sum", model="ov") - _metric(
        metrics_before, "kakehashi_batch_size_sum", model="ov"
    )
    # at most what the compute threads had already started when image 0 failed, not the 63 siblings
    assert prepared <= 8 * requests, prepared
    assert inferred <= 8 * requests, inferred
    growth_mb = (max(peak) - before) / 2**20
    assert growth_mb < 400, f"server RSS grew by {growth_mb:.0f} MB"
    # and the model still answers a single image at once, correctly
    probe = server.client.post("/v1/models/ov/predict", files={"file": ("coffee.png", COFFEE, "image/png")})
    assert probe.status_code == 200 and probe.json()["images"][0]["shape"] == [400, 600]


def test_a_refused_tensor_does_not_break_the_openvino_model(server):
    """After `[0,3,640,640]` (refused) and `[1,3,33,33]` (the runtime fails), `[1,3,640,640]` gets the same answer
    as before them, over HTTP and gRPC, and the image endpoint still works."""
    good = np.random.default_rng(7).random((1, 3, 640, 640), np.float32)
    reference = _binary_infer(server.client, "ov", good)
    assert reference.status_code == 200, reference.text
    expected = np.asarray(reference.json()["outputs"][0]["data"], np.float32)
    predicted = _detections(server)  # random weights find nothing; before the fix this answered 500

    empty = _binary_infer(server.client, "ov", np.zeros((0, 3, 640, 640), np.float32))
    assert empty.status_code == 400 and "dimension of size 0" in empty.json()["error"]
    odd = _binary_infer(server.client, "ov", np.zeros((1, 3, 33, 33), np.float32))
    assert odd.status_code == 500 and "failed to run this request" in odd.json()["error"], odd.text
    assert "Exception from" not in odd.json()["error"], "the runtime's informative line, not its source location"

    again = _binary_infer(server.client, "ov", good)
    assert again.status_code == 200, again.text
    np.testing.assert_allclose(np.asarray(again.json()["outputs"][0]["data"], np.float32), expected, atol=1e-3)
    assert _detections(server) == predicted

    client = triton_grpc.InferenceServerClient(server.grpc_address)
    odd_input = triton_grpc.InferInput("images", [1, 3, 33, 33], "FP32")
    odd_input.set_data_from_numpy(np.zeros((1, 3, 33, 33), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("ov", [odd_input])
    assert refused.value.status() == "StatusCode.INTERNAL" and "failed to run this request" in refused.value.message()
    good_input = triton_grpc.InferInput("images", [1, 3, 640, 640], "FP32")
    good_input.set_data_from_numpy(good)
    answer = client.infer("ov", [good_input]).as_numpy("output0")
    np.testing.assert_allclose(answer.reshape(-1), expected, atol=1e-3)


@pytest.mark.parametrize("shape", [[0, 2**62], [2**40, 2**40], [1] * 40, [2**31, 0]])
def test_impossible_shapes_are_refused_over_http_and_grpc(server, shape):
    logged = len(server.log())
    header = {"inputs": [{"name": "images", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 0}}]}
    body = httpx.Request("POST", "/", json=header).content
    response = server.client.post(
        "/v2/models/ort/infer", content=body, headers={"Inference-Header-Content-Length": str(len(body))}
    )
    assert response.status_code == 400 and "is impossible" in response.json()["error"], response.text
    json_response = server.client.post(
        "/v2/models/ort/infer", json={"inputs": [{"name": "images", "datatype": "FP32", "shape": shape, "data": []}]}
    )
    assert json_response.status_code == 400 and "is impossible" in json_response.json()["error"]
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    tensor = triton_grpc.InferInput("images", shape, "FP32")
    tensor._raw_content = b""  # tritonclient refuses to build such a tensor from numpy; the wire allows it
    with pytest.raises(InferenceServerException) as refused:
        client.infer("ort", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "is impossible" in refused.value.message()
    assert "Traceback" not in server.log()[logged:]


def test_a_batch_over_max_batch_size_is_refused_before_it_runs(server):
    too_many = _binary_infer(server.client, "ort", np.zeros((5, 3, 64, 64), np.float32))
    assert too_many.status_code == 400, too_many.text
    assert "5 rows" in too_many.json()["error"] and "at most 4" in too_many.json()["error"]
    within = _binary_infer(server.client, "ort", np.zeros((4, 3, 64, 64), np.float32))
    assert within.status_code == 200 and within.json()["outputs"][0]["shape"][0] == 4


def _throwing_model(path) -> None:
    """A model that loads but fails every run."""
    rows_of_three_model(path, columns=4)


def test_a_failing_warm_up_is_unavailable_with_its_reason(serve, tmp_path):
    _throwing_model(tmp_path / "throws" / "1" / "model.onnx")
    (tmp_path / "throws" / "model.yaml").write_text("backend: onnxruntime\n")
    server = serve(tmp_path, wait="/v2/health/live")
    deadline = time.monotonic() + 60
    while (rows := server.client.post("/v2/repository/index").json())[0]["state"] == "LOADING":
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    assert rows[0]["state"] == "UNAVAILABLE" and "loading failed" in rows[0]["reason"], rows
    assert "Reshape" in rows[0]["reason"] or "reshape" in rows[0]["reason"], rows
    log = server.log()
    assert "model throws version 1 failed to load" in log and "Traceback" in log
    metrics = server.client.get("/metrics").text
    assert _metric(metrics, "kakehashi_model_state", model="throws", state="UNAVAILABLE") == 1
    assert _metric(metrics, "kakehashi_model_state", model="throws", state="LOADING") == 0
    ready = server.client.get("/v2/models/throws/ready")
    assert ready.status_code == 503 and "loading failed" in ready.json()["error"]
    infer = server.client.post(
        "/v2/models/throws/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    assert infer.status_code == 503 and "loading failed" in infer.json()["error"]


def test_a_failing_warm_up_through_the_load_api_is_unavailable_and_the_state_metric_follows_reloads(serve, tmp_path):
    _throwing_model(tmp_path / "incoming" / "throws" / "1" / "model.onnx")
    (tmp_path / "incoming" / "throws" / "model.yaml").write_text("backend: onnxruntime\n")
    (tmp_path / "fine" / "1").mkdir(parents=True)
    (tmp_path / "fine" / "1" / "model.onnx").symlink_to(YOLO11.resolve())
    (tmp_path / "fine" / "model.yaml").write_text("backend: onnxruntime\nbatching: {max_batch_size: 1}\n")
    server = serve(tmp_path, "--model-control", "explicit")
    (tmp_path / "incoming" / "throws").rename(tmp_path / "throws")
    answer = server.client.post("/v2/repository/models/throws/load")
    assert answer.status_code == 400 and "loading failed" in answer.json()["error"], answer.text
    rows = {row["name"]: row for row in server.client.post("/v2/repository/index").json()}
    assert rows["throws"]["state"] == "UNAVAILABLE" and "loading failed" in rows["throws"]["reason"], rows
    metrics = server.client.get("/metrics").text
    assert _metric(metrics, "kakehashi_model_state", model="throws", state="UNAVAILABLE") == 1
    assert _metric(metrics, "kakehashi_model_state", model="throws", state="LOADING") == 0
    assert "model throws version 1 failed to load" in server.log()
    assert server.client.get("/v2/health/ready").status_code == 200, "a failed load of a new model changes nothing"

    # the state metric follows the version that serves, through a reload and a failed reload
    assert server.client.post("/v2/repository/models/fine/load").status_code == 200
    metrics = server.client.get("/metrics").text
    assert _metric(metrics, "kakehashi_model_state", model="fine", state="READY") == 1
    assert _metric(metrics, "kakehashi_model_state", model="fine", state="UNLOADED") == 0
    (tmp_path / "fine" / "1" / "model.onnx").unlink()
    (tmp_path / "throws" / "1" / "model.onnx").rename(tmp_path / "fine" / "1" / "model.onnx")
    failed = server.client.post("/v2/repository/models/fine/load")
    assert failed.status_code == 400 and "previous versions keep serving" in failed.json()["error"], failed.text
    metrics = server.client.get("/metrics").text
    assert _metric(metrics, "kakehashi_model_state", model="fine", state="READY") == 1
    assert _metric(metrics, "kakehashi_model_state", model="fine", state="UNAVAILABLE") == 0
