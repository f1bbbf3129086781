"""OIP v2 JSON infer over a real server: every datatype round-trips, and bad tensors get 400s naming them."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_builders import identity_model, tiny_model

VALUES = {
    "BOOL": [[True, False], [False, True]],
    "UINT8": [[0, 255], [7, 8]],
    "UINT16": [[0, 65535], [1, 2]],
    "UINT32": [[0, 4294967295], [1, 2]],
    "UINT64": [[0, 2**63], [1, 2]],
    "INT8": [[-128, 127], [0, 1]],
    "INT16": [[-32768, 32767], [0, 1]],
    "INT32": [[-(2**31), 2**31 - 1], [0, 1]],
    "INT64": [[-(2**63), 2**63 - 1], [0, 1]],
    "FP16": [[0.5, -2.0], [1024.0, 0.125]],
    "FP32": [[1.5, -2.25], [3.0e10, 0.0]],
    "FP64": [[1.0e-300, 2.5], [-1.0, 1.0e300]],
    "BYTES": [["héllo", ""], ["a b", "{json}"]],
}


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    repository = tmp_path_factory.mktemp("repo")
    identity_model(repository / "identity.onnx")
    tiny_model(repository / "tiny.onnx")
    return serve_module(repository)


def infer(server, model: str, body, **kwargs):
    return server.client.post(f"/v2/models/{model}/infer", json=body, **kwargs)


def identity_body(datatypes, flat=True, **overrides):
    inputs = []
    for datatype in datatypes:
        data = VALUES[datatype]
        inputs.append(
            {
                "name": f"in_{datatype}",
                "datatype": datatype,
                "shape": [2, 2],
                "data": [v for row in data for v in row] if flat else data,
            }
            | overrides
        )
    return {"inputs": inputs}


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "nested"])
def test_every_datatype_round_trips(server, flat):
    body = identity_body(VALUES, flat) | {"id": "req-7"}
    response = infer(server, "identity", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "identity" and answer["model_version"] == "1" and answer["id"] == "req-7"
    outputs = {o["name"]: o for o in answer["outputs"]}
    for datatype, rows in VALUES.items():
        output = outputs[f"out_{datatype}"]
        assert output["datatype"] == datatype and output["shape"] == [2, 2]
        assert output["data"] == [v for row in rows for v in row], datatype


def test_requested_outputs_only(server):
    body = identity_body(VALUES) | {"outputs": [{"name": "out_INT8"}, {"name": "out_FP32"}]}
    answer = infer(server, "identity", body).json()
    assert [o["name"] for o in answer["outputs"]] == ["out_INT8", "out_FP32"]


def test_tiny_model_computes(server):
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    answer = infer(server, "tiny", body).json()
    [output] = answer["outputs"]
    assert output["shape"] == [2, 3, 64, 64]
    np.testing.assert_allclose(np.asarray(output["data"], np.float32).reshape(x.shape), 2 * x + 1, rtol=1e-6)


def _tiny(shape=(1, 3, 64, 64), datatype="FP32", name="x", count=None):
    count = int(np.prod(shape)) if count is None else count
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": [0] * count}]}


@pytest.mark.parametrize(
    "body, message",
    [
        (_tiny(name="pixels"), "unknown input 'pixels'"),
        (_tiny(shape=(1, 3, 32, 32)), "input 'x' has shape [1, 3, 32, 32]; the model expects [-1, 3, 64, 64]"),
        (_tiny(shape=(3, 64, 64)), "input 'x' has shape [3, 64, 64]"),
        (_tiny(datatype="INT32"), "input 'x' has datatype INT32; the model expects FP32"),
        (_tiny(count=5), "input 'x': shape [1, 3, 64, 64] needs 12288 elements, 'data' has 5"),
        (_tiny(datatype="FP31"), "unknown datatype 'FP31'"),
        ({"inputs": []}, "non-empty 'inputs' list"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, "input 'x' has no 'data'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": []}]},
            "'shape' must be a list of non-negative",
        ),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": ["a", "b"]}]}, "not FP32"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]}, "not a regular array"),
        (_tiny() | {"outputs": [{"name": "z"}]}, "unknown output 'z'"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_tensors_are_400_naming_the_problem(server, body, message):
    response = infer(server, "tiny", body)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "datatype, data, message",
    [
        ("INT8", [1000, 0, 0, 0], "out of range for INT8"),
        ("UINT8", [-1, 0, 0, 0], "out of range for UINT8"),
        ("FP16", [70000, 0, 0, 0], "out of range for FP16"),  # would be inf
        ("FP32", [0, -1e39, 0, 0], "out of range for FP32"),
        ("INT32", [1.5, 0, 0, 0], "not INT32"),
        ("BOOL", [1, 0, 1, 0], "not BOOL"),
        ("BYTES", [1, 2, 3, 4], "BYTES data must be strings"),
    ],
)
def test_values_must_fit_the_datatype(server, datatype, data, message):
    body = {"inputs": [{"name": f"in_{datatype}", "datatype": datatype, "shape": [2, 2], "data": data}]}
    response = infer(server, "identity", body)
    assert response.status_code == 400 and message in response.json()["error"]


def test_missing_input_is_named(server):
    body = identity_body(["FP32"])
    response = infer(server, "identity", body)
    assert response.status_code == 400 and "missing input 'in_BOOL'" in response.json()["error"]


def test_malformed_json(server):
    response = server.client.post(
        "/v2/models/tiny/infer", content=b'{"inputs": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]


def test_tensor_model_has_no_image_predict(server):
    response = server.client.post("/v1/models/tiny/predict", content=b"\x89PNG", headers={"content-type": "image/png"})
    assert response.status_code == 400 and "raw tensors only" in response.json()["error"]
