"""Admission by expected wait: a request whose wait for its turn (the rows admitted ahead of it at the measured
pace of the model's instances) would exceed the model's queue-wait budget or its deadline is refused at once
(429 with Retry-After), before any decoding; nothing is refused before a batch was measured."""

from __future__ import annotations

import asyncio
import math
import re
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import IMAGES, YOLO11, busy_instance
from kakehashi.batching.batcher import EWMA_WEIGHT, DynamicBatcher
from kakehashi.errors import Overloaded

IMAGE = (IMAGES / "coffee.png").read_bytes()
BUDGET_MS = 1000
BURST = 30


class Costly:
    """A run function of known cost: 20 ms per batch and 10 ms per row, outputs twice the inputs."""

    def __call__(self, instance: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.02 + 0.01 * len(feeds["x"]))
        return {"y": feeds["x"] * 2}


def rows(count: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((count, 2), np.float32)}


def measured_batcher(instances: int, batches: list[int]) -> tuple[DynamicBatcher, list[tuple[int, float]]]:
    """A batcher of up to 4 rows over `instances` instances that has run one request of each size in `batches`
    (one after the other); every batch it measured, as (rows, seconds)."""
    seen: list[tuple[int, float]] = []
    batcher = DynamicBatcher(Costly(), instances, 4, 0.0, 64, "costly", lambda r, s: seen.append((r, s)))

    async def scenario() -> None:
        for count in batches:
            await batcher.submit(rows(count), count)

    asyncio.run(scenario())
    return batcher, seen


def averages(seen: list[tuple[int, float]]) -> tuple[float, float]:
    """The moving averages of batch rows and seconds, worked out from the batches measured."""
    (batch_rows, seconds), *rest = seen
    for r, s in rest:
        batch_rows += EWMA_WEIGHT * (r - batch_rows)
        seconds += EWMA_WEIGHT * (s - seconds)
    return batch_rows, seconds


def test_nothing_measured_never_refuses():
    batcher = DynamicBatcher(Costly(), 1, 4, 0.0, 64, "costly")
    assert batcher.expected_wait(1000) is None
    assert batcher.too_late(1000, 0.001, time.perf_counter()) is None


@pytest.mark.parametrize("instances", [1, 2])
def test_expected_wait_is_the_rows_ahead_at_the_measured_pace_over_the_instances(instances):
    batcher, seen = measured_batcher(instances, [1, 4, 4, 2])
    assert [r for r, _ in seen] == [1, 4, 4, 2] and all(s >= 0.02 + 0.01 * r for r, s in seen)
    batch_rows, seconds = averages(seen)
    assert batcher.expected_wait(12) == pytest.approx(12 * seconds / batch_rows / instances)


def test_refused_past_the_budget_or_the_deadline_with_the_tighter_named():
    batcher, _ = measured_batcher(1, [4, 4])
    wait = batcher.expected_wait(20)
    assert wait is not None and wait > 0.2
    assert batcher.too_late(20, None, None) is None
    assert batcher.too_late(20, 2 * wait, time.perf_counter() + 60) is None

    by_budget = batcher.too_late(20, wait / 2, time.perf_counter() + 60)
    assert isinstance(by_budget, Overloaded) and by_budget.status == 429
    assert f"the expected wait in its queue is {wait * 1000:.0f} ms (20 rows ahead)" in by_budget.message
    assert f"queue-wait budget of {wait * 500:.0f} ms" in by_budget.message
    assert by_budget.retry_after == max(1, math.ceil(wait / 2))

    by_deadline = batcher.too_late(20, 2 * wait, time.perf_counter() + wait / 4)
    assert isinstance(by_deadline, Overloaded)
    assert "over the time left before the request's deadline of" in by_deadline.message


def test_the_queue_full_retry_after_is_the_expected_wait():
    batcher, _ = measured_batcher(1, [4, 4])
    wait = batcher.expected_wait(100)
    assert wait is not None and batcher.overloaded(100).retry_after == max(1, math.ceil(wait))


# -- through a server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    """`budget`: YOLO11 at 1280 px (0.1 s an inference on an idle 2-core machine, over 1 s on a busy one), one
    row a batch, one run at a time, a queue-wait budget of a few rows at most; `open`: the same
    without a budget (a queue of 64)."""
    root = tmp_path_factory.mktemp("repo")
    for name, extra in (("budget", f", max_queue_wait_ms: {BUDGET_MS}"), ("open", "")):
        folder = root / name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.onnx").symlink_to(YOLO11.resolve())
        (folder / "model.yaml").write_text(
            "input: {size: [1280, 1280]}\nbackend: onnxruntime\nthreads: 1\nruns_per_instance: 1\n"
            f"batching: {{max_batch_size: 1, max_queue_size: 64{extra}}}\n"
        )
    return serve_module(root)


def post(client: httpx.Client, model: str, **params) -> httpx.Response:
    return client.post(
        f"/v1/models/{model}/predict", params=params, content=IMAGE, headers={"content-type": "image/png"}
    )


async def burst(url: str, model: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        headers = {"content-type": "image/png"}
        return await asyncio.gather(
            *(client.post(f"/v1/models/{model}/predict", content=IMAGE, headers=headers) for _ in range(count))
        )


def grpc_infer(address: str, model: str, timeout_ms: int) -> InferenceServerException:
    """The error of one raw-tensor infer over gRPC with a `timeout_ms` timeout (the call must fail)."""
    images = triton.InferInput("images", [1, 3, 64, 64], "FP32")
    images.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
    with triton.InferenceServerClient(address) as client, pytest.raises(InferenceServerException) as raised:
        client.infer(model, [images], timeout=timeout_ms * 1000)  # microseconds, Triton's unit
    return raised.value


def inferences(server, model: str) -> int:
    return server.client.get(f"/v2/models/{model}/stats").json()["model_stats"][0]["inference_count"]


def test_a_burst_past_the_budget_is_refused_at_once_and_the_rest_answered(server):
    first = post(server.client, "budget")  # alone: nothing was measured yet, and nothing is ahead of it
    assert first.status_code == 200
    expected = first.json()["images"][0]["results"]
    before = inferences(server, "budget")

    responses = asyncio.run(burst(server.url, "budget", BURST))
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == BURST and accepted and refused
    assert all(r.json()["images"][0]["results"] == expected for r in accepted)
    # what was refused never ran: the model counted the accepted ones only
    assert inferences(server, "budget") - before == len(accepted)

    pace = []  # the server's own seconds per row ahead, from what it said when refusing
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        message = response.json()["error"]
        found = re.search(
            r"the expected wait in its queue is (\d+) ms \((\d+) rows ahead\), over (.+) of (\d+) ms", message
        )
        assert found, message
        wait_ms, ahead, what, limit_ms = int(found[1]), int(found[2]), found[3], int(found[4])
        assert what == "the model's queue-wait budget" and limit_ms == BUDGET_MS and wait_ms > BUDGET_MS
        pace.append(wait_ms / ahead)
    # nobody was let in to wait far past the budget: at most the rows that fit in it at that pace were ahead of
    # an accepted request (the first one with nothing ahead; a few more as rows finished during the burst)
    assert len(accepted) <= BUDGET_MS / min(pace) + 1 + 2


def test_without_a_budget_the_same_burst_is_answered(server):
    assert post(server.client, "open").status_code == 200
    assert [r.status_code for r in asyncio.run(burst(server.url, "open", 8))] == [200] * 8


def test_a_request_that_cannot_be_answered_before_its_deadline_is_refused_and_a_generous_one_waits(server):
    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            # one request of 8 images holds the single instance for a while ...
            keeper = await busy_instance(client, server, "open", IMAGE)
            # ... so a request with 100 ms left (10 ms over gRPC) cannot have its turn in time, one with a minute can
            tight = await client.post(
                "/v1/models/open/predict",
                params={"timeout": "100"},
                content=IMAGE,
                headers={"content-type": "image/png"},
            )
            over_grpc = await asyncio.to_thread(grpc_infer, server.grpc_address, "open", 10)
            generous = await client.post(
                "/v1/models/open/predict",
                params={"timeout": "60000"},
                content=IMAGE,
                headers={"content-type": "image/png"},
            )
            return await keeper, tight, over_grpc, generous

    post(server.client, "open")  # measured: the expected wait is known
    before = inferences(server, "open")
    keeper, tight, over_grpc, generous = asyncio.run(scenario())
    assert keeper.status_code == 200 and generous.status_code == 200
    assert tight.status_code == 429 and int(tight.headers["retry-after"]) >= 1
    assert "over the time left before the request's deadline" in tight.json()["error"]
    assert over_grpc.status() == "StatusCode.RESOURCE_EXHAUSTED" and "the expected wait" in over_grpc.message()
    assert inferences(server, "open") - before == 8 + 1  # the keeper's images and the generous one, no tight one
