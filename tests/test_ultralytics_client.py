"""Ultralytics for real, in a separate virtualenv (torch + ultralytics are never part of Kakehashi's serving):
its remote client (`YOLO("http://…/<model>")` and `grpc://`) must find the same detections through Kakehashi as
Kakehashi's own predict endpoint; and `kakehashi export` (the `export` extra, installed there) turns a checkpoint
into an ONNX model that Kakehashi serves."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import IMAGES, YOLO11, YOLO26, virtualenv
from onnx_builders import half_precision

# the first test also builds the tool's virtualenv (pip, minutes on a cold cache): a longer hang guard
pytestmark = [pytest.mark.timeout(1500), pytest.mark.slow]
# the CPU torch pair that installs from this machine's registry; ultralytics pulls torchvision otherwise
REQUIREMENTS = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "ultralytics>=8.3",
    "tritonclient[http,grpc]>=2.41",
    f"-e {Path(__file__).parent.parent}[export]",
]
CLIENT = Path(__file__).parent / "ultralytics_client.py"
IMAGE = IMAGES / "astronaut.png"
CONF = 0.0001  # random weights: every score is tiny


@pytest.fixture(scope="session")
def ultralytics_python(artifacts: Path) -> Path:
    """The virtualenv's python, created once (about a minute from the local registry) and reused."""
    return virtualenv("ultralytics-venv", REQUIREMENTS, artifacts / "ultralytics-venv-install.log")


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name, path in [("yolo26", YOLO26), ("yolo11", YOLO11)]:
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").symlink_to(path.resolve())
    half_precision(YOLO11, root / "yolo11-fp16" / "1" / "model.onnx")  # config says TYPE_FP16: Ultralytics sends FP16
    return serve_module(root)


def _detections(boxes, classes, confidences) -> list[tuple]:
    return sorted((c, tuple(round(v) for v in box), round(s, 4)) for box, c, s in zip(boxes, classes, confidences))


@pytest.mark.parametrize("model", ["yolo26", "yolo11", "yolo11-fp16"])
@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_ultralytics_remote_model_finds_what_kakehashi_finds(ultralytics_python, server, tmp_path, model, scheme):
    address = server.url.removeprefix("http://") if scheme == "http" else server.grpc_address
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "YOLO_CONFIG_DIR": str(tmp_path)}
    run = subprocess.run(
        [str(ultralytics_python), str(CLIENT), f"{scheme}://{address}/{model}", str(IMAGE), str(CONF)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])

    response = server.client.post(
        f"/v1/models/{model}/predict",
        params={"conf": CONF, "decimals": 6},
        files=[("file", (IMAGE.name, IMAGE.read_bytes()))],
    )
    ours = response.json()["images"][0]["results"]
    assert theirs["names"]["0"] == "person" and len(theirs["boxes"]) == len(ours) > 0
    assert _detections(theirs["boxes"], theirs["class"], theirs["confidence"]) == _detections(
        [list(r["box"].values()) for r in ours], [r["class"] for r in ours], [r["confidence"] for r in ours]
    )
    datatype = server.client.get(f"/v2/models/{model}/config").json()["input"][0]["data_type"]
    assert datatype == ("TYPE_FP16" if model.endswith("fp16") else "TYPE_FP32")  # and FP16 is what must be sent
    requests = server.client.get("/metrics").text
    assert f'kakehashi_requests_total{{model="{model}",outcome="success",protocol="{scheme}",version="1"}}' in requests


def test_export_a_checkpoint_and_serve_it(ultralytics_python, serve, tmp_path):
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "YOLO_CONFIG_DIR": str(tmp_path)}
    checkpoint = tmp_path / "yolo11n-random.pt"
    build = "from ultralytics import YOLO; import sys; YOLO('yolo11n.yaml').save(sys.argv[1])"  # random weights
    subprocess.run(
        [str(ultralytics_python), "-c", build, str(checkpoint)], check=True, env=env, timeout=300, capture_output=True
    )
    onnx_file = tmp_path / "repo" / "yolo11n" / "1" / "model.onnx"
    run = subprocess.run(
        [
            str(ultralytics_python.parent / "kakehashi"),
            "export",
            str(checkpoint),
            "--out",
            str(onnx_file),
            "--imgsz",
            "320",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote {onnx_file}" in run.stdout

    server = serve(tmp_path / "repo")
    meta = server.client.get("/v2/models/yolo11n").json()
    assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1]  # dynamic batch and size
    config = server.client.get("/v2/models/yolo11n/config").json()
    assert config["max_batch_size"] > 0
    metadata = ast.literal_eval(config["parameters"]["metadata"]["string_value"])  # from the checkpoint, via ONNX
    assert metadata["task"] == "detect" and metadata["imgsz"] == [320, 320] and len(metadata["names"]) == 80
    response = server.client.post(
        "/v1/models/yolo11n/predict", params={"conf": 0.0001}, files=[("file", (IMAGE.name, IMAGE.read_bytes()))]
    )
    assert response.status_code == 200 and response.json()["images"][0]["shape"] == [512, 512]
