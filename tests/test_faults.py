"""Faults stay local: a request that makes the runtime fail inside a batch fails alone; the others in that
batch are answered correctly, and the server keeps serving."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from onnx_builders import lookup_model, rows_of_three_model

TABLE = np.arange(10, dtype=np.float32) * 1.5


@pytest.fixture(scope="module")
def server(serve_module, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    lookup_model(root / "lookup" / "1" / "model.onnx", TABLE)
    # a long queue delay so concurrent requests surely share one batch
    # ONNX Runtime checks Gather indices (OpenVINO does not): the out-of-range one makes the whole run fail
    # one run at a time, so they all wait for the same batch
    batching = (
        "backend: onnxruntime\nthreads: 1\nruns_per_instance: 1\n"
        "batching: {max_batch_size: 8, preferred_batch_size: 8, max_queue_delay_ms: 1000}\n"
    )
    (root / "lookup" / "model.yaml").write_text(batching)
    rows_of_three_model(root / "pairs" / "1" / "model.onnx", columns=6)
    (root / "pairs" / "model.yaml").write_text(batching)
    return serve_module(root)


def test_outputs_whose_rows_are_not_the_batch_never_mix_requests(server):
    """Batched, the four requests' rows could not be told apart in the output (8 rows for 4 requests): the model is
    never batched, so every client gets its own values."""

    def request(client: int) -> dict:
        return {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 6], "data": [client * 100 + i for i in range(6)]}]
        }

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v2/models/pairs/infer", json=request(c)) for c in range(4)))

    for client, response in enumerate(asyncio.run(together())):
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        assert output["shape"] == [2, 3] and output["data"] == [client * 100 + i for i in range(6)]
    # found by measuring (a batch of 1 gave 2 rows), or by the batcher if a shared batch came first: batching is off
    found = ("model pairs: its outputs do not have one row per input row", "model 'pairs': a batch of")
    deadline = time.monotonic() + 60
    while not any(line in server.log() for line in found):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def _request(index: int) -> dict:
    return {"inputs": [{"name": "index", "datatype": "INT64", "shape": [1, 1], "data": [index]}]}


def test_a_request_that_breaks_its_batch_fails_alone(server):
    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/lookup/infer", json=_request(i)) for i in (2, 50, 7, 0))
            )

    good_2, bad, good_7, good_0 = asyncio.run(together())
    # the runtime failing on a request that passed every check is the server's fault, not the client's
    assert bad.status_code == 500, bad.text
    assert "lookup' version 1 failed to run this request" in bad.json()["error"]
    assert "indices" in bad.json()["error"], "the runtime's reason is in the message"
    for response, index in ((good_2, 2), (good_7, 7), (good_0, 0)):
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [TABLE[index]]
    metrics = server.client.get("/metrics").text
    assert 'kakehashi_batch_executions_total{batch_size="4",model="lookup",version="1"} 1.0' in metrics
    assert server.client.post("/v2/models/lookup/infer", json=_request(9)).json()["outputs"][0]["data"] == [13.5]
    log = server.log()
    assert "model lookup version 1 failed to run a request" in log and "Traceback" in log  # ours: logged
