"""`kakehashi predict` prints the predict endpoint's JSON without a server; errors exit non-zero."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from conftest import IMAGES, YOLO26, free_ports
from onnx_builders import constant_model


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kakehashi", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def quick_bundled(tmp_path_factory) -> str:
    """The bundled detector with ONNX Runtime and no batching (nothing timed at start), for the tests that are
    about the command's output and errors rather than its zero-configuration default."""
    import shutil

    from conftest import QUICK_YAML
    from kakehashi.settings import default_model_path

    folder = tmp_path_factory.mktemp("bundled") / "ssdlite-person"
    shutil.copytree(default_model_path() / "ssdlite-person", folder)
    (folder / "model.yaml").write_text((folder / "model.yaml").read_text() + "\n" + QUICK_YAML)
    return str(folder)


def test_predict_with_the_bundled_model():
    result = run("predict", str(IMAGES / "astronaut.png"), str(IMAGES / "coffee.png"), "--decimals", "2")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [len(i["results"]) for i in answer["images"]] == [1, 0]
    assert answer["images"][0]["results"][0]["name"] == "person"
    assert answer["metadata"] == {"model": "ssdlite-person", "version": "1", "imageCount": 2}


def test_predict_saves_the_annotated_image(tmp_path, quick_bundled):
    from PIL import Image

    out = tmp_path / "out.jpg"
    result = run("predict", str(IMAGES / "astronaut.png"), "--save", str(out), "--model", quick_bundled)
    assert result.returncode == 0, result.stderr
    box = json.loads(result.stdout)["images"][0]["results"][0]["box"]
    drawn, original = Image.open(out), Image.open(IMAGES / "astronaut.png").convert("RGB")
    assert drawn.size == original.size
    edge = (round((box["x1"] + box["x2"]) / 2), round(box["y2"]) - 1)  # on the bottom edge of the box
    assert drawn.getpixel(edge)[0] > 200 and drawn.getpixel(edge)[1] < 100
    inside = (round((box["x1"] + box["x2"]) / 2), round((box["y1"] + box["y2"]) / 2))
    assert max(abs(a - b) for a, b in zip(drawn.getpixel(inside), original.getpixel(inside))) < 40  # untouched
    several = tmp_path / "several"
    assert (
        run(
            "predict",
            str(IMAGES / "astronaut.png"),
            str(IMAGES / "coffee.png"),
            "--save",
            str(several),
            "--model",
            quick_bundled,
        ).returncode
        == 0
    )
    assert sorted(p.name for p in several.iterdir()) == ["astronaut.jpg", "coffee.jpg"]


def test_predict_with_an_onnx_file():
    result = run("predict", str(IMAGES / "chelsea.png"), "--model", str(YOLO26), "--conf", "0.0001", "--max-det", "3")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["metadata"]["model"] == YOLO26.stem and len(answer["images"][0]["results"]) == 3


def test_predict_errors(tmp_path, quick_bundled):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    result = run("predict", str(text), "--model", quick_bundled)
    assert result.returncode == 1 and "not an image in a supported format" in result.stderr
    result = run("predict", str(IMAGES / "coffee.png"), "--conf", "2", "--model", quick_bundled)
    assert result.returncode == 1 and "parameter 'conf'" in result.stderr
    result = run("predict", str(tmp_path / "missing.png"))
    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.parametrize(
    "backend, runtime", [("onnxruntime", "runtime onnxruntime CPUExecutionProvider"), ("openvino", "runtime openvino")]
)
def test_predict_runs_on_the_runtime_asked_for(tmp_path, caplog, backend, runtime):
    """`predict` takes `serve`'s runtime options: the model's load log names the runtime `--backend` chose."""
    from click.testing import CliRunner

    from kakehashi.cli import main

    rows = np.zeros((1, 1, 6), np.float32)
    rows[0, 0] = (10, 20, 40, 50, 0.9, 0)
    folder = tmp_path / "probe"
    metadata = {"names": "{0: 'probe'}", "stride": "32", "task": "detect", "end2end": "True", "imgsz": "[64, 64]"}
    constant_model(folder / "1" / "model.onnx", {"output0": rows}, metadata=metadata)
    (folder / "model.yaml").write_text("batching: {max_batch_size: 1}\n")  # the runtime is left to the command
    caplog.set_level(logging.INFO, logger="kakehashi")
    args = ["predict", str(IMAGES / "coffee.png"), "--model", str(folder), "--backend", backend, "--providers", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["results"][0]["name"] == "probe"
    [ready] = [record.getMessage() for record in caplog.records if " ready in " in record.getMessage()]
    assert runtime in ready


def test_predict_takes_every_documented_predict_parameter():
    from kakehashi.cli import main
    from kakehashi.server.openapi_document import SPEC

    documented = SPEC["paths"]["/v1/models/{model}/predict"]["post"]["parameters"]
    options = {parameter.name for parameter in main.commands["predict"].params}
    assert {p["name"] for p in documented if p["in"] == "query"} - options == {"timeout"}  # the server's deadline


def test_predict_refuses_an_unknown_provider():
    result = run("predict", str(IMAGES / "coffee.png"), "--providers", "warp-drive")
    assert result.returncode == 2 and "Invalid value for '--providers'" in result.stderr


def test_serve_reads_kakehashi_env_vars():
    port, grpc_port = free_ports(2)
    env = {
        **os.environ,
        "KAKEHASHI_PORT": str(port),
        "KAKEHASHI_GRPC_PORT": str(grpc_port),
        "KAKEHASHI_MODEL": str(YOLO26),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kakehashi", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while status != 200 and time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v2/models/{YOLO26.stem}/ready").status_code
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert status == 200
        # and gRPC serves the same model where KAKEHASHI_GRPC_PORT says
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_model_ready(YOLO26.stem, client_timeout=30)
            metadata = client.get_model_metadata(YOLO26.stem, client_timeout=30)
            assert metadata.name == YOLO26.stem and [t.name for t in metadata.inputs] == ["images"]
            assert [(t.name, list(t.shape)) for t in metadata.outputs] == [("output0", [-1, 300, 6])]
    finally:
        process.terminate()
        process.wait(15)
