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
    return serve(tmp_path, "--model-control", "explicit"), tmp_path


def score(client) -> float:
    response = client.post("/v1/models/det/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["results"][0]["confidence"]


def test_reload_and_an_unload_under_continuous_requests_lose_or_garble_nothing(live):
    server, root = live
    _model(root / "other" / "1" / "model.onnx", 0.25)
    assert server.client.post("/v2/repository/models/other/load").status_code == 200
    assert [(row["name"], row["state"]) for row in server.client.post("/v2/repository/index").json()] == [
        ("det", "READY"),
        ("other", "READY"),
    ]
    _model(root / "det" / "2" / "model.onnx", 0.75)
    by_thread: list[list[tuple[int, float | None]]] = [[], [], []]  # each client's answers, in its own order
    stop = threading.Event()

    def hammer(answers: list) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v1/models/det/predict", content=IMAGE, headers={"content-type": "image/png"})
                ok = response.status_code == 200
                answers.append((response.status_code, ok and response.json()["images"][0]["results"][0]["confidence"]))

    def count() -> int:
        return sum(len(answers) for answers in by_thread)

    threads = [threading.Thread(target=hammer, args=(answers,)) for answers in by_thread]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: count() >= 5)
        assert server.client.post("/v2/repository/models/det/load").status_code == 200
        switched = [len(answers) for answers in by_thread]
        assert server.client.post("/v2/repository/models/other/unload").status_code == 200
        assert server.client.get("/v2/health/ready").status_code == 200  # an unload is no outage
        assert score(server.client) == 0.75
        _wait_for(lambda: all(len(answers) >= mark + 3 for answers, mark in zip(by_thread, switched)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    answers = [answer for thread_answers in by_thread for answer in thread_answers]
    assert {status for status, _ in answers} == {200}
    assert {confidence for _, confidence in answers} <= {0.5, 0.75}
    # after the switch each client may still get one old answer (its request was under way); then only new ones
    later = [
        confidence for thread_answers, mark in zip(by_thread, switched) for _, confidence in thread_answers[mark + 1 :]
    ]
    assert later and set(later) == {0.75}
    assert server.client.get("/v2/models/det").json()["versions"] == ["2"]
    assert server.client.get("/v2/models/other/ready").status_code == 503


def test_poll_repository_picks_up_new_changed_and_removed_models(serve, tmp_path):
    _model(tmp_path / "det" / "1" / "model.onnx", 0.5)
    _model(tmp_path / "gone" / "1" / "model.onnx", 0.5)
    server = serve(tmp_path, "--model-control", "poll", "--poll-seconds", "0.2")

    def states() -> dict:
        return {
            (row["name"], row.get("version")): row["state"] for row in server.client.post("/v2/repository/index").json()
        }

    def reasons() -> dict:
        return {
            (row["name"], row.get("version")): row["reason"] or ""
            for row in server.client.post("/v2/repository/index").json()
        }

    _model(tmp_path / "det" / "2" / "model.onnx", 0.75)  # a new version
    _wait_for(lambda: states().get(("det", "2")) == "READY")
    assert score(server.client) == 0.75 and ("det", "1") not in states()

    (tmp_path / "det" / "model.yaml").write_text("defaults: {conf: 0.8}\n")  # a changed model.yaml
    _wait_for(
        lambda: (
            server.client.post("/v1/models/det/predict", content=IMAGE, headers={"content-type": "image/png"}).json()[
                "images"
            ][0]["results"]
            == []
        )
    )

    _model(tmp_path / "new" / "1" / "model.onnx", 0.25)  # a new model
    _wait_for(lambda: states().get(("new", "1")) == "READY")

    (tmp_path / "det" / "3").mkdir()  # a broken new version: version 2 keeps serving
    (tmp_path / "det" / "3" / "model.onnx").write_bytes(b"\x08\x01garbage")
    _wait_for(lambda: "cannot be loaded" in reasons().get(("det", "2"), ""))
    assert states()[("det", "2")] == "READY" and server.client.get("/v2/models/det").json()["versions"] == ["2"]

    for path in sorted((tmp_path / "gone").rglob("*"), reverse=True):  # a removed model
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "gone").rmdir()
    _wait_for(lambda: states().get(("gone", None)) == "UNLOADED")
    assert server.client.get("/v2/health/ready").status_code == 200  # a removed model takes nothing down
    assert "Traceback" not in server.log()


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
    assert (
        "cannot be loaded as an ONNX model" in response.json()["error"] and "keep serving" in response.json()["error"]
    )
    assert score(server.client) == 0.5
    [row] = server.client.post("/v2/repository/index").json()
    assert row["state"] == "READY" and row["version"] == "1"
    assert row["reason"].startswith("reload failed, previous versions still serving: ")
    assert "cannot be loaded as an ONNX model" in row["reason"]


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
