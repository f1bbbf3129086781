"""The real `tritonclient.http` against Kakehashi: health, metadata, config, statistics, repository, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from conftest import YOLO26


@pytest.fixture(scope="module")
def client(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    (root / "yolo26").mkdir()
    (root / "yolo26" / "1").mkdir()
    (root / "yolo26" / "1" / "model.onnx").symlink_to(YOLO26.resolve())
    (root / "yolo26" / "model.yaml").write_text("batching: {max_batch_size: 2}\n")
    server = serve_module(root, "--model-control", "explicit")
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("yolo26") and client.is_model_ready("yolo26", "1")
    assert not client.is_model_ready("yolo26", "9") and not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "kakehashi"
    assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics"} <= set(server["extensions"])
    meta = client.get_model_metadata("yolo26")
    assert meta["inputs"][0]["name"] == "images" and meta["outputs"][0]["shape"] == [-1, 300, 6]


def test_config_as_ultralytics_reads_it(client):
    import ast

    config = client.get_model_config("yolo26")
    assert config["max_batch_size"] == 2
    assert config["input"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    metadata = ast.literal_eval(config["parameters"]["metadata"]["string_value"])
    assert metadata["task"] == "detect" and metadata["names"][0] == "person" and metadata["end2end"] is True
    assert metadata["imgsz"] == [640, 640] and metadata["stride"] == 32


def test_infer_then_statistics(client):
    images = triton.InferInput("images", [2, 3, 320, 320], "FP32")
    images.set_data_from_numpy(np.full((2, 3, 320, 320), 0.5, np.float32))
    result = client.infer("yolo26", [images])
    assert result.as_numpy("output0").shape == (2, 300, 6)
    [stats] = client.get_inference_statistics("yolo26")["model_stats"]
    assert stats["name"] == "yolo26" and stats["inference_count"] >= 2
    assert stats["inference_stats"]["success"]["count"] >= 1 and stats["inference_stats"]["queue"]["count"] >= 1


def test_repository_calls(client):
    assert [row["name"] for row in client.get_model_repository_index()] == ["yolo26"]
    client.unload_model("yolo26")
    assert not client.is_model_ready("yolo26")
    client.load_model("yolo26")
    assert client.is_model_ready("yolo26")


def test_errors_carry_the_message(client):
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    wrong = triton.InferInput("images", [1, 3, 320, 320], "INT32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 320, 320), np.int32))
    with pytest.raises(InferenceServerException, match="datatype INT32; the model expects FP32"):
        client.infer("yolo26", [wrong])
    with pytest.raises(InferenceServerException, match="no model 'nope'"):
        client.load_model("nope")
