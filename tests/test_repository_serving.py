"""Serving a repository: versions, model.yaml, and models that fail to load while the rest keep serving."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import image_bytes
from onnx_builders import constant_model, size_probe_model


def _e2e_rows(score: float) -> np.ndarray:
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (0, 0, 320, 320, score, 1)
    return rows


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    meta = {"end2end": "True", "names": "{0: 'cat', 1: 'dog'}", "stride": "32"}
    for version, score in ((1, 0.5), (2, 0.75), (3, 0.9)):
        constant_model(root / "det" / str(version) / "model.onnx", {"output0": _e2e_rows(score)}, metadata=meta)
    (root / "det" / "model.yaml").write_text("version_policy: {latest: 2}\ndefaults: {conf: 0.1}\n")
    constant_model(root / "broken" / "1" / "model.onnx", {"output0": _e2e_rows(0.5)}, metadata=meta)
    (root / "broken" / "model.yaml").write_text("task: detect\ncolour: blue\n")
    (root / "notonnx").mkdir()
    (root / "notonnx" / "model.onnx").write_bytes(b"this is not a protobuf at all")
    constant_model(root / "fixed.onnx", {"output0": _e2e_rows(0.5)}, metadata=meta, input_shape=[1, 3, 640, 640])
    size_probe_model(root / "probe.onnx")
    return root


@pytest.fixture(scope="module")
def server(serve_module, repository):
    server = serve_module(repository, wait="/v2/models/det/ready")
    server.wait_until("/v2/models/fixed/ready")
    server.wait_until("/v2/models/probe/ready")
    return server


def confidence(server, path: str) -> float:
    response = server.client.post(path, files=[("file", ("a.png", image_bytes(640, 640)))])
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["results"][0]["confidence"]


def test_newest_versions_served_per_policy(server):
    assert server.client.get("/v2/models/det").json()["versions"] == ["2", "3"]
    assert confidence(server, "/v1/models/det/predict") == 0.9
    assert confidence(server, "/v1/models/det/versions/2/predict") == 0.75
    response = server.client.post("/v1/models/det/versions/1/predict", files=[("file", ("a.png", image_bytes(8, 8)))])
    assert response.status_code == 404 and "served versions: 2, 3" in response.json()["error"]


def test_names_from_metadata_and_defaults_from_model_yaml(server):
    response = server.client.post("/v1/models/det/predict", files=[("file", ("a.png", image_bytes(640, 640)))])
    assert response.json()["images"][0]["results"][0]["name"] == "dog"


def test_bad_model_yaml_leaves_the_model_unready_with_the_reason(server, repository):
    response = server.client.get("/v2/models/broken/ready")
    assert response.status_code == 503
    message = response.json()["error"]
    assert str(repository / "broken" / "model.yaml") in message and "unknown key 'colour'" in message


def test_a_file_that_is_not_onnx(server, repository):
    response = server.client.get("/v2/models/notonnx/ready")
    assert response.status_code == 503
    message = response.json()["error"]
    assert str(repository / "notonnx" / "model.onnx") in message and "cannot be loaded as an ONNX model" in message
    predict = server.client.post("/v1/models/notonnx/predict", files=[("file", ("a.png", image_bytes(8, 8)))])
    assert predict.status_code == 503


def test_server_not_ready_while_a_model_failed_but_still_live(server):
    assert server.client.get("/v2/health/live").status_code == 200
    assert server.client.get("/v2/health/ready").status_code == 503


def test_fixed_input_size_refuses_other_imgsz(server):
    files = [("file", ("a.png", image_bytes(100, 100)))]
    response = server.client.post("/v1/models/fixed/predict", files=files, params={"imgsz": 320})
    assert response.status_code == 400 and "fixed input size 640x640" in response.json()["error"]
    response = server.client.post("/v1/models/fixed/predict", files=files, params={"imgsz": 640})
    assert response.status_code == 200, response.text
    [result] = response.json()["images"][0]["results"]  # the box 0..320 of the 640 input: half of 100 px
    assert result["box"] == {"x1": 0.0, "y1": 0.0, "x2": 50.0, "y2": 50.0} and result["confidence"] == 0.5


@pytest.mark.parametrize(
    "imgsz, confidence, box",
    [
        (None, 0.64, (0, 0, 320, 320)),  # the model's 640: input pixels are image pixels
        ("320", 0.32, (0, 0, 640, 640)),  # scale 0.5: the box covers the whole input
        ("420", 0.448, (0, 0, 457.14285, 457.14285)),  # rounded up to 448: 320 * 640 / 448
        ("300,500", 0.512, (0, 0, 448, 640)),  # 320x512: scale 0.5, padded 96 px left and right
    ],
)
def test_imgsz_sets_the_size_the_model_runs_at(server, imgsz, confidence, box):
    """The probe's score is its input width / 1000 and its box covers input pixels 0..320: the score says the
    width the model ran at (imgsz rounded up to the stride, 32), the box that the answer is mapped back from
    that size to the 640x640 image's pixels (through the letterbox, clipped)."""
    files = [("file", ("a.png", image_bytes(640, 640)))]
    response = server.client.post(
        "/v1/models/probe/predict", files=files, params={"conf": 0.1} | ({"imgsz": imgsz} if imgsz else {})
    )
    assert response.status_code == 200, response.text
    [result] = response.json()["images"][0]["results"]
    assert result["confidence"] == pytest.approx(confidence, abs=1e-4)
    assert result["box"] == pytest.approx(dict(zip(("x1", "y1", "x2", "y2"), box)), abs=1e-3)


def test_single_file_and_missing_path(serve, tmp_path, repository):
    single = serve(repository / "fixed.onnx")
    assert single.client.get("/v2/models/fixed").json()["inputs"][0]["shape"] == [1, 3, 640, 640]
    with pytest.raises(RuntimeError, match="does not exist"):
        serve(tmp_path / "nowhere.onnx")


def test_the_index_gives_the_reason_of_each_model_that_failed(server, repository):
    rows = {
        row["name"]: row
        for row in server.client.post("/v2/repository/index").json()
        if row["name"] in ("broken", "notonnx")
    }
    assert rows["broken"]["state"] == "UNAVAILABLE" and "unknown key 'colour'" in rows["broken"]["reason"]
    assert (
        rows["notonnx"]["state"] == "UNAVAILABLE" and "cannot be loaded as an ONNX model" in rows["notonnx"]["reason"]
    )


@pytest.mark.parametrize("policy, served", [("{specific: [1, 3]}", ["1", "3"]), ("{all: true}", ["1", "2", "3"])])
def test_version_policies_and_every_way_to_address_a_version(serve, tmp_path, policy, served):
    import tritonclient.grpc as triton_grpc

    scores = {1: 0.5, 2: 0.75, 3: 0.9}
    for version, score in scores.items():
        constant_model(
            tmp_path / "det" / str(version) / "model.onnx",
            {"output0": _e2e_rows(score)},
            metadata={"end2end": "True", "names": "{0: 'cat', 1: 'dog'}", "stride": "32"},
        )
    (tmp_path / "det" / "model.yaml").write_text(f"version_policy: {policy}\n")
    server = serve(tmp_path)
    assert server.client.get("/v2/models/det").json()["versions"] == served
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}]}
    with triton_grpc.InferenceServerClient(server.grpc_address) as grpc_client:
        tensor = triton_grpc.InferInput("images", [1, 3, 32, 32], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
        for version in served:
            score = scores[int(version)]
            answer = server.client.post(f"/v2/models/det/versions/{version}/infer", json=body).json()
            assert answer["model_version"] == version and answer["outputs"][0]["data"][4] == score
            over_grpc = grpc_client.infer("det", [tensor], model_version=version)
            assert over_grpc.get_response().model_version == version
            assert over_grpc.as_numpy("output0")[0, 0, 4] == pytest.approx(score)
            config = server.client.get(f"/v2/models/det/versions/{version}/config").json()
            assert config["name"] == "det" and config["output"][0]["name"] == "output0"
            [stats] = server.client.get(f"/v2/models/det/versions/{version}/stats").json()["model_stats"]
            assert stats["version"] == version and stats["inference_count"] == 2  # one HTTP, one gRPC
        missing = next(v for v in ("2", "4") if v not in served)
        response = server.client.post(f"/v2/models/det/versions/{missing}/infer", json=body)
        assert response.status_code == 404 and f"has no version {missing}" in response.json()["error"]
