"""The binary tensor data extension, spoken by the real `tritonclient.http` (binary by default, gzip too),
and its error paths over raw HTTP."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from onnx_builders import SAMPLE_TENSORS as ARRAYS
from onnx_builders import identity_model


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    repository = tmp_path_factory.mktemp("repo")
    identity_model(repository / "identity.onnx")
    return serve_module(repository)


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def _inputs(binary: bool) -> list:
    inputs = []
    for datatype, array in ARRAYS.items():
        tensor = triton.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_tritonclient_round_trips_every_datatype(client, binary_in, compression):
    result = client.infer("identity", _inputs(binary_in), request_compression_algorithm=compression)
    for datatype, array in ARRAYS.items():
        np.testing.assert_array_equal(result.as_numpy(f"out_{datatype}"), array)


def test_json_outputs_when_asked_per_output(client):
    outputs = [
        triton.InferRequestedOutput("out_INT32", binary_data=False),
        triton.InferRequestedOutput("out_BYTES", binary_data=True),
    ]
    result = client.infer("identity", _inputs(True), outputs=outputs)
    response = result.get_response()
    by_name = {o["name"]: o for o in response["outputs"]}
    assert "data" in by_name["out_INT32"] and "binary_data_size" in by_name["out_BYTES"]["parameters"]
    np.testing.assert_array_equal(result.as_numpy("out_INT32"), ARRAYS["INT32"])
    np.testing.assert_array_equal(result.as_numpy("out_BYTES"), ARRAYS["BYTES"])


def test_server_metadata_lists_the_extension(client):
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_server_live() and client.is_model_ready("identity")


def _raw(server, header: dict, binary: bytes, length: int | None = None, **headers):
    import orjson

    head = orjson.dumps(header)
    return server.client.post(
        "/v2/models/identity/infer",
        content=head + binary,
        headers={"Inference-Header-Content-Length": str(len(head) if length is None else length), **headers},
    )


def _header(size: int) -> dict:
    inputs = [
        {"name": f"in_{d}", "datatype": d, "shape": list(a.shape), "data": a.tolist()}
        for d, a in ARRAYS.items()
        if d not in ("FP32", "BYTES", "FP16", "UINT64")
    ]
    inputs += [
        {"name": "in_FP16", "datatype": "FP16", "shape": [2, 2], "data": [0.5, 1, 2, 3]},
        {"name": "in_UINT64", "datatype": "UINT64", "shape": [2, 2], "data": [0, 1, 2, 3]},
    ]
    inputs.append({"name": "in_BYTES", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "c", "d"]})
    inputs.append({"name": "in_FP32", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": size}})
    return {"inputs": inputs}


@pytest.mark.parametrize(
    "size, binary, length, message",
    [
        (16, b"\0" * 20, None, "4 binary bytes after the JSON header belong to no input"),
        (32, b"\0" * 16, None, "binary_data_size 32 does not fit"),
        (16, b"\0" * 16, 10**9, "is not a length within"),
        (16, b"\0" * 16, "abc", "is not a length within"),
    ],
)
def test_malformed_binary_requests(server, size, binary, length, message):
    response = _raw(server, _header(size), binary, length)
    assert response.status_code == 400 and message in response.json()["error"]


def test_malformed_bytes_elements(server):
    header = _header(16)
    header["inputs"][-2] = {
        "name": "in_BYTES",
        "datatype": "BYTES",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 8},
    }
    binary = struct.pack("<I", 100) + b"abcd" + b"\0" * 16  # first element claims 100 bytes
    response = _raw(server, header, binary)
    assert response.status_code == 400 and "runs past the data" in response.json()["error"]


def test_compression_bomb_and_bad_encodings(server):
    bomb = gzip.compress(b"\0" * 80_000_000)
    response = server.client.post("/v2/models/identity/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    response = server.client.post(
        "/v2/models/identity/infer", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400 and "cannot be decompressed" in response.json()["error"]
    response = server.client.post("/v2/models/identity/infer", content=b"{}", headers={"Content-Encoding": "br"})
    assert response.status_code == 415
