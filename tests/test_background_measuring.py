"""A server's first start of a model on a machine serves at once on a safe default (f32 on ONNX Runtime, batches of
one) and measures the runtimes, precisions and batch sizes after it is READY, then switches without failing a
request; later starts reuse what it found."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from conftest import IMAGES, YOLO11
from kakehashi.protocols.vision import parse_params
from kakehashi.repository.config import ServerDefaults
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, default_model_path

SWITCHED = "measured in the background; now serving"
_POOL = ThreadPoolExecutor(2)
MEASURING = "kakehashi.repository.measuring"


def _measuring_children(pid: int) -> list[psutil.Process]:
    """The processes measuring for the server `pid` (its children running the measuring module)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(MEASURING in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _niceness(process: psutil.Process) -> int | None:
    try:
        return process.nice()
    except psutil.NoSuchProcess:
        return None


def _openvino_mapped(pid: int) -> bool:
    return "libopenvino" in Path(f"/proc/{pid}/maps").read_text()


def _folder(root: Path, batch: int = 4, size: int = 320) -> Path:
    folder = root / "yolo"
    (folder / "1").mkdir(parents=True)
    shutil.copy(YOLO11, folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text(f"batching: {{max_batch_size: {batch}}}\ninput: {{size: {size}}}\n")
    return folder


def test_a_first_start_serves_at_once_then_switches_with_no_failed_request(serve, tmp_path, monkeypatch):
    cache = tmp_path / "decisions"
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(cache))
    folder = _folder(tmp_path)
    server = serve(folder)
    image = (IMAGES / "coffee.png").read_bytes()
    before, after = 0, 0
    deadline = time.monotonic() + 180
    measuring_seen, niceness = False, set()
    while SWITCHED not in server.log():
        children = _measuring_children(server.process.pid)
        measuring_seen = measuring_seen or bool(children)
        niceness |= {_niceness(child) for child in children} - {None}
        assert time.monotonic() < deadline, f"no switch after measuring: {server.log()}"
        answer = server.client.post("/v1/models/yolo/predict", content=image, headers={"content-type": "image/png"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["images"][0]["shape"] == [400, 600]
        before += 1
    for _ in range(5):
        answer = server.client.post("/v1/models/yolo/predict", content=image, headers={"content-type": "image/png"})
        assert answer.status_code == 200 and answer.json()["images"][0]["shape"] == [400, 600], answer.text
        after += 1
    assert before >= 1  # requests were answered while it measured
    assert measuring_seen, "the runtimes are measured in a child process"
    # at a lower priority than the server's (once it has set it, its first instruction): its requests come first
    assert niceness and max(niceness) > psutil.Process(server.process.pid).nice(), niceness
    assert not _measuring_children(server.process.pid)  # gone once it answered
    log = server.log()
    at_once = log.index("serving at once on onnxruntime f32")
    assert at_once < log.index("version 1 ready in") < log.index(" per inference") < log.index(SWITCHED)
    assert "batches of up to 1" in log[at_once : log.index(SWITCHED)]  # the safe default until measured
    [stored] = cache.glob("*.json")
    decision = json.loads(stored.read_text())
    runtime = server.client.get("/v2/models/yolo/config").json()["parameters"]["runtime"]["string_value"]
    assert runtime.startswith(decision["runtime"])
    # the server loaded only what won: OpenVINO's libraries are in it exactly when OpenVINO serves
    assert _openvino_mapped(server.process.pid) == (decision["runtime"] == "openvino"), decision
    server.stop()

    again = serve(folder)
    log = again.log()
    assert "load decisions reused" in log and "serving at once" not in log
    config = again.client.get("/v2/models/yolo/config").json()
    assert config["parameters"]["runtime"]["string_value"].startswith(decision["runtime"])
    assert config["dynamic_batching"]["preferred_batch_size"] == [decision["batch_size"]]


@pytest.mark.parametrize("precision", ["int8"])
def test_a_precision_named_is_checked_before_serving_not_after(serve, tmp_path, monkeypatch, precision):
    """A named precision must pass its check first, so it is never served unchecked: no serving at once."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = tmp_path / "person"  # a real detector: it finds the astronaut on the calibration images
    shutil.copytree(default_model_path() / "ssdlite-person", folder)
    shutil.copy(folder / "1" / "model.onnx", folder / "1" / "model.int8.onnx")  # the same answers: it agrees
    server = serve(folder, "--precision", precision)
    log = server.log()
    assert "serving at once" not in log and f"precision {precision} (agrees with f32" in log


@pytest.mark.parametrize("end", ["unload", "kill -9"])
def test_the_measuring_process_ends_with_its_model_or_its_server(serve, tmp_path, monkeypatch, end):
    """Unloading the model stops its measuring (the child is killed); a server killed outright leaves no measuring
    process behind (the child ends when its parent's end of the pipe closes)."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = _folder(tmp_path, batch=8, size=640)  # measuring takes tens of seconds: ending it is what ends it
    server = serve(folder.parent, "--model-control", "explicit")
    deadline = time.monotonic() + 60
    while not (children := _measuring_children(server.process.pid)):
        assert SWITCHED not in server.log() and time.monotonic() < deadline, f"no measuring process: {server.log()}"
        time.sleep(0.02)
    [child] = children
    if end == "unload":
        answer = server.client.post("/v2/repository/models/yolo/unload")
        assert answer.status_code == 200, answer.text
        assert "measuring stopped: the model is unloading" in server.log()
        assert server.client.get("/v2/health/live").status_code == 200
    else:
        os.kill(server.process.pid, signal.SIGKILL)
    gone, _ = psutil.wait_procs([child], timeout=5)
    assert gone == [child], f"the measuring process outlived {end}"
    assert SWITCHED not in server.log()


def test_models_are_measured_one_at_a_time(serve, tmp_path, monkeypatch):
    """Timings taken side by side disturb each other: a server starting with several models measures them in turn,
    and the next one only once the first has switched (the instances a switch creates and warms would slow it)."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = _folder(tmp_path / "models")
    shutil.copytree(folder, folder.parent / "again")
    server = serve(folder.parent, wait="/v2/health/live")
    most = 0
    switched_before: dict[int, int] = {}  # each measuring process: the switches logged when it was first seen
    deadline = time.monotonic() + 180
    while (log := server.log()).count(SWITCHED) < 2:
        assert time.monotonic() < deadline, f"not both measured: {log}"
        children = _measuring_children(server.process.pid)
        most = max(most, len(children))
        for child in children:
            switched_before.setdefault(child.pid, log.count(SWITCHED))
        time.sleep(0.01)
    assert most == 1
    assert sorted(switched_before.values()) == [0, 1], switched_before


def test_a_model_file_gone_while_measuring_is_said_plainly_and_the_model_serves_on(tmp_path, monkeypatch, caplog):
    """A poll may remove a model while it measures: the measuring's error is logged as such (no traceback), and
    the instances loaded before keep answering."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))
    folder = _folder(tmp_path / "models")
    repository = ModelRepository(folder.parent, _POOL, Limits(), ServerDefaults(measure_in_background=True))
    with caplog.at_level(logging.INFO):
        repository.load_all()
        handle = repository.get("yolo")
        (folder / "1" / "model.onnx").unlink()  # before the child has read it (it first imports the runtimes)
        assert handle._measuring is not None
        handle._measuring.join(120)
    assert "measuring in the background failed" in caplog.text and "model.onnx" in caplog.text
    assert "Traceback" not in caplog.text and not any(record.exc_info for record in caplog.records)
    image = (IMAGES / "coffee.png").read_bytes()
    [answer] = asyncio.run(handle.predict([image], parse_params({}, handle.config.defaults)))
    assert answer.shape == (400, 600)
    asyncio.run(repository.close_all())
