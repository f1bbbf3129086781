"""In-process checks of a model version's bookkeeping: admission by rows, statistics read from the version's own
series, and an unloaded version leaving nothing behind."""

from __future__ import annotations

import asyncio
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import REGISTRY

from kakehashi.errors import Overloaded
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits
from kakehashi.statistics import live_figures, model_statistics
from onnx_builders import constant_model


@pytest.fixture
def repository(tmp_path, request):
    name = request.node.name.removeprefix("test_")  # Prometheus series live as long as the process: one name a test
    constant_model(tmp_path / name / "1" / "model.onnx", {"out": np.ones((1, 2), np.float32)})
    # a row limit of 8 queued + 4 running = 12 rows
    (tmp_path / name / "model.yaml").write_text(
        "backend: onnxruntime\nbatching: {max_batch_size: 4, max_queue_size: 8, max_queue_delay_ms: 50}\n"
    )
    pool = ThreadPoolExecutor(2)
    repository = ModelRepository(tmp_path, pool, Limits())
    repository.load_all()
    yield repository
    pool.shutdown()


def _rows(count: int) -> dict[str, np.ndarray]:
    return {"images": np.zeros((count, 3, 8, 8), np.float32)}


def test_admission_counts_rows_not_requests(repository):
    handle = repository.get(next(iter(repository.entries)))

    async def burst() -> list:
        return await asyncio.gather(*(handle.infer(_rows(4)) for _ in range(6)), return_exceptions=True)

    answers = asyncio.run(burst())
    served = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, Overloaded)]
    assert len(served) == 3 and len(refused) == 3, answers  # 3 x 4 rows fill the 12 places; counted as requests, 6 fit
    assert all(a["out"].shape == (4, 2) for a in served)


def test_statistics_come_from_the_versions_own_series(repository, monkeypatch):
    handle = repository.get(next(iter(repository.entries)))

    async def run() -> None:
        for rows in (1, 3, 2):
            await handle.infer(_rows(rows))

    asyncio.run(run())

    def no_scan():
        raise AssertionError("statistics scanned the whole Prometheus registry")

    monkeypatch.setattr(REGISTRY, "collect", no_scan)
    stats = model_statistics(handle)
    assert stats["inference_count"] == 6 and stats["execution_count"] == 3
    assert {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]} == {
        1: 1,
        2: 1,
        3: 1,
    }
    assert stats["inference_stats"]["queue"]["count"] == 3
    assert live_figures(handle)["batches"] == {"1": 1, "2": 1, "3": 1}


def test_an_unloaded_version_is_garbage_collected(repository):
    handle = repository.get(next(iter(repository.entries)))
    asyncio.run(handle.infer(_rows(1)))  # its batcher, threads and series are in use
    gone = weakref.ref(handle)
    series = weakref.ref(handle.series)
    del handle
    asyncio.run(repository.unload(next(iter(repository.entries))))
    gc.collect()
    assert gone() is None, gc.get_referrers(gone())
    assert series() is None
