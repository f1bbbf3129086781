"""SIGTERM drains: every request accepted before it is answered correctly (running and queued, HTTP and gRPC),
new work is refused (connection refused / 503 / UNAVAILABLE), and the process exits cleanly within the grace."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from conftest import IMAGES, YOLO26

ASTRONAUT = (IMAGES / "astronaut.png").read_bytes()
HTTP_REQUESTS, GRPC_REQUESTS = 16, 4


def _in_flight(server) -> float:
    total = 0.0
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith("kakehashi_inflight_requests{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _slow_yolo(serve, root, grace: str, *extra: str):
    """YOLO26 one request at a time; predicts at 1280 px take ~0.1-0.2 s each, so a queue outlasts the signal."""
    (root / "yolo" / "1").mkdir(parents=True)
    (root / "yolo" / "1" / "model.onnx").symlink_to(YOLO26.resolve())
    (root / "yolo" / "model.yaml").write_text("batching: {max_batch_size: 1}\n")
    return serve(root, "--grace-seconds", grace, *extra)


def _predicts_in_background(server, count: int) -> tuple[threading.Thread, list]:
    """`count` concurrent 1280-px predicts from a thread; each answer (or exception) lands in the list as it comes."""
    answers: list = []

    async def calls() -> None:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=count)
        ) as client:

            async def call() -> None:
                try:
                    answers.append(
                        await client.post(
                            "/v1/models/yolo/predict?imgsz=1280",
                            content=ASTRONAUT,
                            headers={"content-type": "image/png"},
                        )
                    )
                except httpx.HTTPError as exc:
                    answers.append(exc)

            await asyncio.gather(*(call() for _ in range(count)))

    thread = threading.Thread(target=lambda: asyncio.run(calls()))
    thread.start()
    return thread, answers


def _wait_for(condition, what: str, timeout: float = 30):
    """Poll `condition` until it returns something true (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.01)
    return result


def _wait_until_in_flight(server, count: int) -> float:
    """Wait until at least `count` requests are accepted (most of them queued); how many are."""
    return _wait_for(lambda: (accepted := _in_flight(server)) >= count and accepted, "requests in flight", 60)


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/v2/health/live", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_finishes_every_accepted_request_then_exits(serve, tmp_path):
    server = _slow_yolo(serve, tmp_path, "60")
    grpc_results: list = []

    def grpc_calls() -> None:
        with triton_grpc.InferenceServerClient(server.grpc_address) as client:
            tensor = triton_grpc.InferInput("images", [1, 3, 1280, 1280], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 3, 1280, 1280), np.float32))
            done = threading.Event()
            for _ in range(GRPC_REQUESTS):
                client.async_infer(
                    "yolo",
                    [tensor],
                    callback=lambda result, error: (
                        grpc_results.append(error or result.as_numpy("output0").shape),
                        len(grpc_results) == GRPC_REQUESTS and done.set(),
                    ),
                )
            done.wait(120)

    grpc_thread = threading.Thread(target=grpc_calls)
    grpc_thread.start()
    http_thread, http_answers = _predicts_in_background(server, HTTP_REQUESTS)
    accepted = _wait_until_in_flight(server, 8)

    server.client.close()
    late = httpx.Client(base_url=server.url, timeout=30)  # made now, connects after the signal
    server.process.send_signal(signal.SIGTERM)
    # the signal is handled: readiness turns 503 while the accepted requests are still in flight
    _wait_for(lambda: late.get("/v2/health/ready").status_code == 503, "readiness 503")
    assert http_thread.is_alive()  # its requests are not all answered yet
    late_http = late.post("/v1/models/yolo/predict", content=ASTRONAUT[:4096], headers={"content-type": "image/png"})
    assert late_http.status_code == 503 and "shutting down" in late_http.json()["error"]
    late.close()
    with triton_grpc.InferenceServerClient(server.grpc_address) as late:
        assert late.is_server_live() and not late.is_server_ready()  # health is answered while draining
        tensor = triton_grpc.InferInput("images", [1, 3, 64, 64], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(InferenceServerException) as refused:
            late.infer("yolo", [tensor])
        # refused by the handler, not by gRPC's stop: the port keeps taking calls while some are being answered
        assert refused.value.status() == "StatusCode.UNAVAILABLE" and "shutting down" in refused.value.message()

    http_thread.join(120)
    grpc_thread.join(120)
    _wait_for(lambda: _refuses_connections(server.url), "the listening socket closed")  # once all are answered
    assert server.process.wait(60) == 0
    assert len(http_answers) == HTTP_REQUESTS and len(grpc_results) == GRPC_REQUESTS
    answered = [a for a in http_answers if isinstance(a, httpx.Response) and a.status_code == 200]
    refused = [
        a
        for a in http_answers
        if isinstance(a, httpx.ConnectError) or isinstance(a, httpx.Response) and a.status_code == 503
    ]
    others = [a for a in http_answers if not any(a is b for b in answered + refused)]
    assert not others, [(type(a).__name__, str(a)) for a in others]  # nothing else: no 500, no lost request
    assert all(a.json()["images"][0]["shape"] == [512, 512] for a in answered)
    grpc_answered = [r for r in grpc_results if r == (1, 300, 6)]
    grpc_others = [r for r in grpc_results if r != (1, 300, 6)]
    assert all(
        isinstance(r, InferenceServerException)
        and r.status() == "StatusCode.UNAVAILABLE"
        and "shutting down" in r.message()
        for r in grpc_others
    ), [str(r) for r in grpc_others]
    assert len(answered) + len(grpc_answered) >= accepted  # every request in flight at the signal was answered
    log = server.log()
    assert "draining" in log and "Traceback" not in log


def test_when_the_grace_period_runs_out_the_queued_rest_gets_503_and_the_process_exits(serve, tmp_path):
    server = _slow_yolo(serve, tmp_path, "1")
    requests = 30  # one at a time: several seconds of work, far past the grace
    thread, answers = _predicts_in_background(server, requests)
    # every request accepted (answered or in flight) before the signal: one still arriving could be cut
    _wait_for(lambda: len(answers) + _in_flight(server) == requests, "every request accepted", 60)
    server.client.close()
    server.process.send_signal(signal.SIGTERM)
    status = server.process.wait(60)
    thread.join(60)
    answered = [a for a in answers if isinstance(a, httpx.Response) and a.status_code == 200]
    refused = [a for a in answers if isinstance(a, httpx.Response) and a.status_code == 503]
    assert len(answered) + len(refused) == requests, [a for a in answers if a not in answered + refused]
    assert answered and refused  # some finished within the grace; each of the rest got a 503, not a cut connection
    assert all("grace period ran out" in a.json()["error"] for a in refused)
    assert len(refused) > len(answered)  # the grace (1 s) allowed a few at most, not the whole queue
    assert all(a.json()["images"][0]["shape"] == [512, 512] for a in answered)  # what was answered is whole
    assert status == 0 and "Traceback" not in server.log()


def test_grpc_calls_in_flight_at_sigterm_are_all_answered(serve, tmp_path):
    """Only gRPC calls in flight, more work than the 5 s backstop after HTTP goes idle: the server waits until
    its gRPC calls are answered too before it stops, so every call is answered."""
    # no request deadline: on a busy machine 32 calls at once could be expected to wait past 60 s, and be refused
    # on arrival (admission by expected wait), which is not what this test is about
    server = _slow_yolo(serve, tmp_path, "60", "--request-timeout-ms", "0")
    calls, results, done = 32, [], threading.Event()  # ~0.3 s each here: well past the 5 s backstop
    tensor = triton_grpc.InferInput("images", [1, 3, 1280, 1280], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 1280, 1280), np.float32))

    def answered(result, error) -> None:
        results.append(error or result.as_numpy("output0").shape)
        if len(results) == calls:
            done.set()

    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        for _ in range(calls):
            client.async_infer("yolo", [tensor], callback=answered)
        # every call accepted (answered or in flight; one still arriving at the signal may be refused), and many left
        _wait_for(lambda: len(results) + _in_flight(server) == calls, "every call accepted", 120)
        server.process.send_signal(signal.SIGTERM)
        assert done.wait(180), f"{len(results)} of {calls} answered"
    assert server.process.wait(60) == 0
    assert results == [(1, 300, 6)] * calls, [str(r) for r in results if r != (1, 300, 6)]
    log = server.log()
    assert "draining" in log and "Traceback" not in log
