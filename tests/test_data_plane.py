"""The data plane, through every transport that reaches it: requested outputs are checked before anything runs,
and each request is counted once, by its transport and outcome."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from conftest import QUICK_YAML
from onnx_builders import tiny_model


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    tiny_model(root / "tiny" / "1" / "model.onnx")
    (root / "tiny" / "model.yaml").write_text(QUICK_YAML + "task: tensor\n")
    return serve_module(root)


def _inferences(server) -> int:
    [stats] = server.client.get("/v2/models/tiny/stats").json()["model_stats"]
    return stats["inference_count"]


def _requests(server, protocol: str, outcome: str) -> float:
    prefix = f'kakehashi_requests_total{{model="tiny",outcome="{outcome}",protocol="{protocol}",version="1"}} '
    lines = [line for line in server.client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def _body(outputs: list[str]) -> dict:
    data = np.ones((1, 3, 64, 64), np.float32)
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(data.shape), "data": data.ravel().tolist()}],
        "outputs": [{"name": name} for name in outputs],
    }


def test_an_unknown_output_is_refused_before_inference_over_http_and_grpc(server):
    answer = server.client.post("/v2/models/tiny/infer", json=_body(["y"]))
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"][:2] == [3.0, 3.0]
    ran = _inferences(server)
    refused = server.client.post("/v2/models/tiny/infer", json=_body(["y", "z"]))
    assert refused.status_code == 400 and "unknown output 'z'" in refused.json()["error"]
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        tensor = triton_grpc.InferInput("x", [1, 3, 64, 64], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 3, 64, 64), np.float32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("tiny", [tensor], outputs=[triton_grpc.InferRequestedOutput("z")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "unknown output 'z'" in caught.value.message()
    assert _inferences(server) == ran  # neither ran the model


def test_each_request_is_counted_once_by_transport_and_outcome(server):
    before = {(p, o): _requests(server, p, o) for p in ("http", "grpc") for o in ("success", "invalid")}
    assert server.client.post("/v2/models/tiny/infer", json=_body([])).status_code == 200
    assert server.client.post("/v2/models/tiny/infer", json={"inputs": []}).status_code == 400
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        tensor = triton_grpc.InferInput("x", [1, 3, 64, 64], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
        assert client.infer("tiny", [tensor]).as_numpy("y").shape == (1, 3, 64, 64)
    after = {key: _requests(server, *key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("http", "success"): 1,
        ("http", "invalid"): 1,
        ("grpc", "success"): 1,
        ("grpc", "invalid"): 0,
    }
