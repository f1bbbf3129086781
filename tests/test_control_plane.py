"""The control plane against live servers: load/unload off by default, readiness that tells the truth, one lock
for every change (a late unload is never lost, a load/unload storm ends in the state of its last call), and 404s
that name no served model."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from tritonclient.grpc import service_pb2 as pb  # the same wire messages as Kakehashi's; one process cannot import both
from tritonclient.grpc import service_pb2_grpc as service

from conftest import YOLO11, image_bytes
from kakehashi.cli import main
from onnx_builders import constant_model

META = {"end2end": "True", "names": "{0: 'cat', 1: 'dog'}", "stride": "32"}
IMAGE = image_bytes(64, 64)


def _model(path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (0, 0, 32, 32, 0.5, 1)
    return constant_model(path, {"output0": rows}, metadata=META)


def _stub(server):
    channel = grpc.insecure_channel(server.grpc_address)
    return channel, service.GRPCInferenceServiceStub(channel)


def _grpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def _states(server) -> dict:
    return {row["name"]: row["state"] for row in server.client.post("/v2/repository/index").json()}


@pytest.fixture(scope="module")
def default(serve_module, tmp_path_factory):
    """A repository of two models served with no control flag."""
    root = tmp_path_factory.mktemp("repo")
    _model(root / "alpha" / "1" / "model.onnx")
    _model(root / "beta" / "1" / "model.onnx")
    return serve_module(root)


def test_load_and_unload_are_off_by_default_over_http_and_grpc(default):
    for action in ("load", "unload"):
        response = default.client.post(f"/v2/repository/models/alpha/{action}")
        assert response.status_code == 403 and "--model-control explicit" in response.json()["error"], response.text
    channel, stub = _stub(default)
    with channel:
        for call in (
            lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="alpha")),
            lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="alpha")),
        ):
            error = _grpc_error(call)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "--model-control" in error.details()
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert _states(default) == {"alpha": "READY", "beta": "READY"}  # the index stays readable; nothing changed
    assert default.client.get("/v2/health/ready").status_code == 200


def test_an_unknown_model_names_no_served_model(default):
    for path in ("/v2/models/zzz/ready", "/v2/models/zzz", "/v2/models/zzz/versions/1/ready"):
        response = default.client.get(path)
        assert response.status_code == 404 and "zzz" in response.text, path
        assert "alpha" not in response.text and "beta" not in response.text, response.text
    channel, stub = _stub(default)
    with channel:
        for call in (
            lambda: stub.ModelReady(pb.ModelReadyRequest(name="zzz")),
            lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="zzz")),
        ):
            error = _grpc_error(call)
            assert error.code() == grpc.StatusCode.NOT_FOUND and "zzz" in error.details()
            assert "alpha" not in error.details() and "beta" not in error.details()


def test_poll_seconds_needs_model_control_poll():
    result = CliRunner().invoke(main, ["serve", "--poll-seconds", "2"])
    assert result.exit_code == 2 and "--poll-seconds needs --model-control poll" in result.output
    result = CliRunner().invoke(main, ["serve", "--model-control", "sometimes"])
    assert result.exit_code == 2 and "'none', 'explicit', 'poll'" in result.output


def _ready(server, stub) -> tuple[int, bool]:
    return server.client.get("/v2/health/ready").status_code, stub.ServerReady(pb.ServerReadyRequest()).ready


def test_readiness_tells_the_truth(serve, tmp_path):
    _model(tmp_path / "alpha" / "1" / "model.onnx")
    _model(tmp_path / "beta" / "1" / "model.onnx")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"\x08\x01garbage")
    server = serve(tmp_path, "--model-control", "explicit", wait="/v2/health/live")
    _wait_for(lambda: _states(server) == {"alpha": "READY", "beta": "READY", "broken": "UNAVAILABLE"})
    channel, stub = _stub(server)
    with channel:
        assert _ready(server, stub) == (503, False)  # a model found at start is not READY
        assert server.client.post("/v2/repository/models/broken/unload").status_code == 200
        assert _ready(server, stub) == (200, True)  # unloaded on purpose: no longer expected
        assert server.client.post("/v2/repository/models/broken/load").status_code == 400
        assert _ready(server, stub) == (200, True)  # a failed load of a model not expected changes nothing
        assert server.client.post("/v2/repository/models/alpha/unload").status_code == 200
        assert _ready(server, stub) == (200, True)
        assert server.client.post("/v2/repository/models/beta/unload").status_code == 200
        assert _ready(server, stub) == (503, False)  # no model READY: never ready
        assert server.client.post("/v2/repository/models/alpha/load").status_code == 200
        assert _ready(server, stub) == (200, True)


def _slow_model(root, monkeypatch, batch: int = 1) -> None:
    """A model whose load takes a while, not minutes: two ONNX Runtime sessions of YOLO11n at 1280 px, each warmed
    up (the servers started next keep no load decisions, so each load is a first one: it serves at once and
    measures batch sizes up to `batch` after)."""
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", "")
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.onnx").symlink_to(YOLO11.resolve())
    (root / "slow" / "model.yaml").write_text(
        f"backend: onnxruntime\ninstances: 2\ninput: {{size: 1280}}\nbatching: {{max_batch_size: {batch}}}\n"
    )


def test_an_unload_sent_during_a_load_is_not_lost(serve, tmp_path, monkeypatch):
    """The attack: an unload sent while a (slow) reload ran answered 200 and left the model READY."""
    _slow_model(tmp_path, monkeypatch, batch=2)
    server = serve(tmp_path, "--model-control", "explicit")
    answered: dict[str, tuple[int, float]] = {}

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            status = client.post("/v2/repository/models/slow/load").status_code
            answered["load"] = (status, time.monotonic())

    loading = threading.Thread(target=load)
    loading.start()
    loading_state = 'kakehashi_model_state{model="slow",state="LOADING",version="1"} 1.0'
    _wait_for(lambda: loading_state in server.client.get("/metrics").text)  # the unload is sent while the load runs
    unload_sent = time.monotonic()
    unload = server.client.post("/v2/repository/models/slow/unload")
    loading.join()
    assert answered["load"][0] == 200 and unload.status_code == 200, unload.text
    assert answered["load"][1] > unload_sent, "the load finished before the unload was sent: nothing overlapped"
    assert _states(server) == {"slow": "UNLOADED"}
    assert server.client.get("/v2/models/slow/ready").status_code == 503


def test_an_unload_during_the_startup_load_waits_for_it(serve, tmp_path, monkeypatch):
    """The startup load holds the lock: an unload sent while it runs is answered after it, and the model ends
    unloaded everywhere, its state metric included (not READY in a handle the index no longer shows)."""
    _slow_model(tmp_path, monkeypatch, batch=4)  # the unload must be sent before the startup load is over
    server = serve(tmp_path, "--model-control", "explicit", wait="/v2/health/live")
    assert "models loaded" not in server.log(), "the startup load was over before the unload: nothing overlapped"
    assert server.client.post("/v2/repository/models/slow/unload").status_code == 200
    _wait_for(lambda: "models loaded" in server.log())
    assert _states(server) == {"slow": "UNLOADED"}
    metric = re.compile(r'kakehashi_model_state\{model="slow",state="(\w+)",version="1"\} 1\.0')
    assert metric.findall(server.client.get("/metrics").text) == ["UNLOADED"]
    assert server.client.get("/v2/health/ready").status_code == 503  # nothing READY


CHANGE = re.compile(r"model storm (loaded|unloaded)\b")


def test_a_load_unload_storm_ends_in_the_state_of_its_last_call(serve, tmp_path):
    """40 calls in 10 rounds from four clients (two over HTTP, two over gRPC); in each round the four are sent
    together, two loads and two unloads (each client alternating). Every answer is a success. The lock serialises
    the calls and the server logs each change under it, so the log is the order they took effect and were
    answered; after every round the model is in the state of that round's last call."""
    _model(tmp_path / "storm" / "1" / "model.onnx")
    _model(tmp_path / "steady" / "1" / "model.onnx")  # keeps the server ready whatever the storm does
    server = serve(tmp_path, "--model-control", "explicit")
    http = [httpx.Client(base_url=server.url, timeout=120) for _ in range(2)]
    channels = [_stub(server) for _ in range(2)]
    together = threading.Barrier(4)

    def over_http(client: httpx.Client, action: str) -> object:
        together.wait()
        return client.post(f"/v2/repository/models/storm/{action}").status_code

    def over_grpc(stub, action: str) -> object:
        request = (pb.RepositoryModelLoadRequest if action == "load" else pb.RepositoryModelUnloadRequest)(
            model_name="storm"
        )
        together.wait()
        try:
            getattr(stub, "RepositoryModelLoad" if action == "load" else "RepositoryModelUnload")(request, timeout=120)
        except grpc.RpcError as exc:
            return exc.code()
        return 200

    try:
        with ThreadPoolExecutor(4) as pool:
            for round_ in range(10):
                actions = [("load", "unload")[(round_ + client) % 2] for client in range(4)]
                calls = [
                    pool.submit(over_http, http[0], actions[0]),
                    pool.submit(over_http, http[1], actions[1]),
                    pool.submit(over_grpc, channels[0][1], actions[2]),
                    pool.submit(over_grpc, channels[1][1], actions[3]),
                ]
                assert [call.result(300) for call in calls] == [200] * 4, (round_, actions)
                changes = CHANGE.findall(server.log())
                assert len(changes) == 4 * (round_ + 1), changes
                expected = {"loaded": "READY", "unloaded": "UNLOADED"}[changes[-1]]
                assert _states(server) == {"steady": "READY", "storm": expected}, (round_, changes[-4:])
                assert server.client.get("/v2/models/storm/ready").status_code == (200 if expected == "READY" else 503)
                assert channels[0][1].ModelReady(pb.ModelReadyRequest(name="storm")).ready == (expected == "READY")
    finally:
        for client in http:
            client.close()
        for channel, _ in channels:
            channel.close()
    assert server.client.get("/v2/health/ready").status_code == 200
    assert "Traceback" not in server.log()
