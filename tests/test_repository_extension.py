"""Live model management: index, load a new version, a corrupt reload, unload — without dropping requests."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from conftest import image_bytes
from onnx_builders import constant_model

META = {"end2end": "True", "names": "{0: 'cat', 1: 'dog'}", "stride": "32"}
IMAGE = image_bytes(320, 320)


def _model(path, score: float):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (0, 0, 320, 320, score, 1)
    return constant_model(path, {"output0": rows}, metadata=META)


@pytest.fixture
def live(serve, tmp_path):
    _model(tmp_path / "det" / "1" / "model.onnx", 0.5)
    return serve(tmp_path), tmp_path


def score(client) -> float:
    response = client.post("/v1/models/det/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["results"][0]["confidence"]


def test_reload_picks_up_a_new_version_without_dropping_requests(live):
    server, root = live
    assert server.client.post("/v2/repository/index").json() == [
        {"name": "det", "version": "1", "state": "READY", "reason": ""}]
    _model(root / "det" / "2" / "model.onnx", 0.75)
    statuses: list[int] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/models/det/predict", content=IMAGE,
                                            headers={"content-type": "image/png"}).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: len(statuses) >= 5)
        assert server.client.post("/v2/repository/models/det/load").status_code == 200
        assert score(server.client) == 0.75
        before = len(statuses)
        _wait_for(lambda: len(statuses) >= before + 5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}
    assert server.client.get("/v2/models/det").json()["versions"] == ["2"]


def _wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_corrupt_new_version_keeps_the_old_one_serving(live):
    server, root = live
    (root / "det" / "2").mkdir()
    (root / "det" / "2" / "model.onnx").write_bytes(b"\x08\x01garbage")
    response = server.client.post("/v2/repository/models/det/load")
    assert response.status_code == 400
    assert "cannot be loaded as an ONNX model" in response.json()["error"] and "keep serving" in response.json()["error"]
    assert score(server.client) == 0.5
    [row] = server.client.post("/v2/repository/index").json()
    assert row["state"] == "READY" and row["version"] == "1"


def test_unload_then_load(live):
    server, _ = live
    assert server.client.post("/v2/repository/models/det/unload").status_code == 200
    response = server.client.post("/v1/models/det/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert response.status_code == 503 and "unloaded" in response.json()["error"]
    assert server.client.post("/v2/repository/index").json()[0]["state"] == "UNLOADED"
    assert server.client.post("/v2/repository/index", json={"ready": True}).json() == []
    assert server.client.post("/v2/repository/models/det/load").status_code == 200
    assert score(server.client) == 0.5


def test_unknown_model(live):
    server, _ = live
    assert server.client.post("/v2/repository/models/nope/load").status_code == 404
    assert server.client.post("/v2/repository/models/nope/unload").status_code == 404
    assert "model_repository" in server.client.get("/v2").json()["extensions"]
