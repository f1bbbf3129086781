"""Under load over a real socket: 429 with Retry-After, 504 past deadlines, dropped work of departed clients,
and the metrics and Triton statistics that count all of it."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from conftest import IMAGES, YOLO11, busy_instance

IMAGE = (IMAGES / "coffee.png").read_bytes()


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    folder = root / "slow"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to(YOLO11.resolve())
    # at 1280 px an inference takes ~0.1 s here: slow enough that queues build and deadlines pass in them (one
    # runtime: which one serves is not the point, and timing both at 1280 px would slow every start); one thread
    # and one run at a time: first in, first out
    (folder / "model.yaml").write_text(
        "input: {size: [1280, 1280]}\nbatching: {max_batch_size: 1, max_queue_size: 10}\nbackend: onnxruntime\n"
        "threads: 1\nruns_per_instance: 1\n"
    )
    folder = root / "batched"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to(YOLO11.resolve())
    (folder / "model.yaml").write_text(
        "batching: {max_batch_size: 4, preferred_batch_size: 4, max_queue_size: 64}\nbackend: onnxruntime\n"
    )
    return serve_module(root)


async def _burst(url: str, count: int, params=None, timeout: float = 60) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:

        async def one():
            try:
                return await client.post(
                    "/v1/models/slow/predict", params=params, content=IMAGE, headers={"content-type": "image/png"}
                )
            except httpx.TimeoutException as exc:
                return exc

        return await asyncio.gather(*(one() for _ in range(count)))


def stats(server, model="slow") -> dict:
    return server.client.get(f"/v2/models/{model}/stats").json()["model_stats"][0]


def test_full_queue_answers_429_with_retry_after(server):
    responses = asyncio.run(_burst(server.url, 30))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 3 and codes.count(429) >= 1 and set(codes) == {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "in its queue (the limit)" in refused.json()["error"]


def test_past_deadline_is_504_and_never_inferred_once_expired_in_the_queue(server):
    before = stats(server)["inference_count"]
    responses = asyncio.run(_burst(server.url, 4, params={"timeout": "100"}))
    assert {r.status_code for r in responses} <= {200, 429, 504}
    errors = [r.json()["error"] for r in responses if r.status_code == 504]
    in_queue = [e for e in errors if "waited past its deadline in model 'slow:1''s queue" in e]
    running = [e for e in errors if "inference in model 'slow:1' ran past its deadline" in e]
    # one expected to wait past its deadline is refused on arrival; one let in may still expire in the queue
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert all("over the time left before the request's deadline" in e for e in refused)
    assert (in_queue or refused) and len(in_queue) + len(running) == len(errors)
    # what expired in the queue never ran; a request already running finishes (and counts) but answers 504
    ran = [r for r in responses if r.status_code == 200]
    follower = server.client.post("/v1/models/slow/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert follower.status_code == 200  # one instance, first in first out: all earlier work has finished
    assert stats(server)["inference_count"] - before == len(ran) + len(running) + 1


def test_departed_clients_work_is_dropped(server):
    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            # one request of 8 images keeps the single instance busy for a while (over 0.4 s of work ahead) ...
            keeper = await busy_instance(client, server, "slow", IMAGE)
            # ... so two more queue behind it, and their clients give up long before their turn
            leavers = await _burst(server.url, 2, timeout=0.05)
            return await keeper, leavers

    server.client.post("/v1/models/slow/predict", content=IMAGE, headers={"content-type": "image/png"})
    before = stats(server)["inference_count"]
    keeper, leavers = asyncio.run(scenario())
    assert keeper.status_code == 200 and all(isinstance(r, httpx.TimeoutException) for r in leavers), leavers
    # one instance, first in first out: once a follower is answered, whatever queued before it has run or gone
    follower = server.client.post("/v1/models/slow/predict", content=IMAGE, headers={"content-type": "image/png"})
    assert follower.status_code == 200
    assert stats(server)["inference_count"] - before == 8 + 1  # the keeper's images and the follower: no leaver
    metrics = server.client.get("/metrics").text
    assert re.search(
        r'kakehashi_requests_total\{model="slow",outcome="cancelled",protocol="http",version="1"\} [1-9]', metrics
    )


def test_concurrent_requests_are_batched(server):
    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/models/batched/predict", content=IMAGE, headers={"content-type": "image/png"})
                    for _ in range(12)
                )
            )

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 12
    model = stats(server, "batched")
    sizes = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in model["batch_stats"]}
    assert max(sizes) > 1 and sum(size * count for size, count in sizes.items()) == 12
    assert model["inference_count"] == 12 and model["execution_count"] == sum(sizes.values())
    assert model["inference_stats"]["success"]["count"] == 12


def test_metrics_exposition(server):
    text = server.client.get("/metrics").text
    for name in (
        "kakehashi_requests_total",
        "kakehashi_request_duration_seconds_bucket",
        "kakehashi_queue_duration_seconds_bucket",
        "kakehashi_preprocess_duration_seconds_bucket",
        "kakehashi_inference_duration_seconds_bucket",
        "kakehashi_postprocess_duration_seconds_bucket",
        "kakehashi_batch_size_bucket",
        "kakehashi_queue_depth",
        "kakehashi_inflight_requests",
        "kakehashi_model_load_duration_seconds",
        "kakehashi_model_state",
    ):
        assert name in text, name
    assert 'kakehashi_model_state{model="slow",state="READY",version="1"} 1.0' in text
    assert re.search(
        r'kakehashi_requests_total\{model="slow",outcome="rejected",protocol="http",version="1"\} [1-9]', text
    )


def test_config_says_when_batching_is_off(server):
    assert server.client.get("/v2/models/slow/config").json()["max_batch_size"] == 0
    assert server.client.get("/v2/models/batched/config").json()["max_batch_size"] == 4
