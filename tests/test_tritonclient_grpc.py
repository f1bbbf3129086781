"""The real `tritonclient.grpc` against Kakehashi's `inference.GRPCInferenceService`: health, metadata, every
datatype as raw and as typed contents, config, statistics, repository calls and each error's status code."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import YOLO26
from onnx_builders import SAMPLE_TENSORS, identity_model

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    identity_model(root / "identity.onnx")
    identity_model(root / "typed.onnx", TYPED_FIELDS)  # every type but FP16, which has no typed contents field
    for name, yaml in [
        ("yolo26", "batching: {max_batch_size: 2}\n"),
        ("tight", "batching: {max_batch_size: 1, max_queue_size: 1}\n"),
    ]:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").symlink_to(YOLO26.resolve())
        (root / name / "model.yaml").write_text(yaml)
    return serve_module(root, "--max-body-bytes", "8000000", "--model-control", "explicit")


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.grpc_address) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _status(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("identity") and client.is_model_ready("yolo26", "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "kakehashi"
    assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(server["extensions"])
    meta = client.get_model_metadata("yolo26")
    assert meta.name == "yolo26" and meta.versions == ["1"] and meta.platform in ("openvino", "onnxruntime_onnx")
    assert (meta.inputs[0].name, meta.inputs[0].datatype, list(meta.inputs[0].shape)) == (
        "images",
        "FP32",
        [-1, 3, -1, -1],
    )
    assert list(meta.outputs[0].shape) == [-1, 300, 6]


def test_every_datatype_round_trips_raw(client):
    inputs = []
    for datatype, array in SAMPLE_TENSORS.items():
        tensor = triton.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(f"out_{datatype}") for datatype in reversed(SAMPLE_TENSORS)]
    result = client.infer("identity", inputs, outputs=outputs, request_id="raw-1")
    assert result.get_response().id == "raw-1"
    assert [o.name for o in result.get_response().outputs] == [o.name() for o in outputs]
    for datatype, array in SAMPLE_TENSORS.items():
        answer = result.as_numpy(f"out_{datatype}")
        assert answer.dtype == array.dtype or datatype == "BYTES"
        np.testing.assert_array_equal(answer, array)


def _typed_request(datatypes) -> service_pb2.ModelInferRequest:
    """A request built with tritonclient's own messages, every input in its typed `contents` field."""
    request = service_pb2.ModelInferRequest(model_name="typed")
    for datatype in datatypes:
        array = SAMPLE_TENSORS[datatype]
        tensor = request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=array.shape)
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.reshape(-1).tolist())
    return request


def test_every_datatype_round_trips_as_typed_contents(stub):
    result = triton.InferResult(stub.ModelInfer(_typed_request(TYPED_FIELDS)))
    for datatype in TYPED_FIELDS:
        np.testing.assert_array_equal(result.as_numpy(f"out_{datatype}"), SAMPLE_TENSORS[datatype])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.inputs[0].contents.bool_contents.append(True), "needs 4 elements, bool_contents has 5"),
        (lambda r: r.inputs[1].contents.int_contents.__setitem__(0, 128), "out of range for INT8"),
        (lambda r: r.inputs[1].__setattr__("datatype", "INT9"), "unknown datatype 'INT9'"),
        (lambda r: r.inputs[1].__setattr__("datatype", "FP16"), "FP16 has no typed contents field"),
        (lambda r: r.raw_input_contents.append(b"\0" * 4), "send every input raw or none"),
        (lambda r: r.inputs.add().CopyFrom(r.inputs[0]), "input 'in_BOOL' is given twice"),
        (lambda r: r.outputs.add(name="out_nope"), "unknown output 'out_nope'"),
    ],
)
def test_bad_tensors_are_invalid_argument(stub, change, message):
    request = _typed_request(TYPED_FIELDS)
    change(request)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in raised.value.details()


def test_config_matches_http_and_reads_as_ultralytics_does(client, server):
    import ast

    config = client.get_model_config("yolo26", as_json=True)["config"]
    http = server.client.get("/v2/models/yolo26/config").json()
    assert config["max_batch_size"] == http["max_batch_size"] == 2
    assert config["input"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": ["3", "-1", "-1"]}]
    assert [o["name"] for o in config["output"]] == [o["name"] for o in http["output"]]
    metadata = config["parameters"]["metadata"]["string_value"]
    assert metadata == http["parameters"]["metadata"]["string_value"]
    assert ast.literal_eval(metadata)["names"][0] == "person"


def test_infer_then_statistics(client):
    images = triton.InferInput("images", [2, 3, 320, 320], "FP32")
    images.set_data_from_numpy(np.full((2, 3, 320, 320), 0.5, np.float32))
    assert client.infer("yolo26", [images]).as_numpy("output0").shape == (2, 300, 6)
    [stats] = client.get_inference_statistics("yolo26", as_json=True)["model_stats"]
    assert stats["name"] == "yolo26" and int(stats["inference_count"]) >= 2
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in every} == {"identity", "typed", "tight", "yolo26"}


def test_repository_index_unload_and_load(client, stub):
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("yolo26", "READY"), ("identity", "READY")}
    client.unload_model("identity")
    assert not client.is_model_ready("identity")
    status, message = _status(lambda: client.get_model_metadata("identity"))
    assert status == "StatusCode.UNAVAILABLE" and "not ready" in message
    everything = {m.name: m.state for m in stub.RepositoryIndex(service_pb2.RepositoryIndexRequest()).models}
    ready_only = {m.name for m in stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True)).models}
    assert everything["identity"] == "UNLOADED" and "identity" not in ready_only and "yolo26" in ready_only
    client.load_model("identity")
    assert client.is_model_ready("identity")


@pytest.mark.parametrize(
    "call, status, message",
    [
        (lambda c: c.get_model_metadata("nope"), "NOT_FOUND", "unknown model 'nope'"),
        (lambda c: c.get_model_metadata("yolo26", "9"), "NOT_FOUND", "has no version 9"),
        (lambda c: c.get_model_config("../../etc"), "INVALID_ARGUMENT", "invalid model name '../../etc'"),
        (lambda c: c.get_model_config("yolo26", "1/../2"), "INVALID_ARGUMENT", "invalid version '1/../2'"),
        (lambda c: c.load_model("nope"), "NOT_FOUND", "no model 'nope'"),
        (lambda c: c.load_model("yolo26", config='{"max_batch_size": 4}'), "INVALID_ARGUMENT", "not supported"),
        (lambda c: c.unload_model("nope"), "NOT_FOUND", "unknown model 'nope'"),
    ],
)
def test_errors_carry_status_and_message(client, call, status, message):
    got_status, got_message = _status(lambda: call(client))
    assert got_status == f"StatusCode.{status}" and message in got_message


def test_wrong_datatype_and_oversized_message(client):
    wrong = triton.InferInput("images", [1, 3, 64, 64], "INT32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.int32))
    status, message = _status(lambda: client.infer("yolo26", [wrong]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "datatype INT32; the model expects FP32" in message
    huge = triton.InferInput("images", [1, 3, 1024, 1024], "FP32")  # 12.6 MB over the 8 MB limit
    huge.set_data_from_numpy(np.zeros((1, 3, 1024, 1024), np.float32))
    status, _ = _status(lambda: client.infer("yolo26", [huge]))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"


def test_request_timeout_is_deadline_exceeded(client):
    images = triton.InferInput("images", [1, 3, 640, 640], "FP32")
    images.set_data_from_numpy(np.zeros((1, 3, 640, 640), np.float32))
    status, message = _status(lambda: client.infer("yolo26", [images], timeout=1))  # 1 µs, Triton's unit
    assert status == "StatusCode.DEADLINE_EXCEEDED" and "deadline" in message


def test_full_queue_is_resource_exhausted_and_the_rest_are_answered(server):
    async def burst() -> list:
        async with triton_aio.InferenceServerClient(server.grpc_address) as client:
            images = triton_aio.InferInput("images", [1, 3, 640, 640], "FP32")
            images.set_data_from_numpy(np.zeros((1, 3, 640, 640), np.float32))
            return await asyncio.gather(*(client.infer("tight", [images]) for _ in range(12)), return_exceptions=True)

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, InferenceServerException)]
    answered = [r for r in results if not isinstance(r, Exception)]
    assert refused and answered and len(refused) + len(answered) == 12
    assert all(r.status() == "StatusCode.RESOURCE_EXHAUSTED" and "queue" in r.message() for r in refused)
    assert all(r.as_numpy("output0").shape == (1, 300, 6) for r in answered)
