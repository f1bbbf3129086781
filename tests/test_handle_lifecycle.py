"""In-process checks of a model version's bookkeeping: admission by rows, statistics read from the version's own
series, and an unloaded version leaving nothing behind."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import REGISTRY

from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.errors import Overloaded
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits
from kakehashi.statistics import live_figures, model_statistics
from onnx_builders import constant_model


@pytest.fixture
def repository(tmp_path, request):
    name = request.node.name.removeprefix("test_")  # Prometheus series live as long as the process: one name a test
    constant_model(tmp_path / name / "1" / "model.onnx", {"out": np.ones((1, 2), np.float32)})
    # a row limit of 8 queued + 4 running (one run at a time) = 12 rows
    (tmp_path / name / "model.yaml").write_text(
        "backend: onnxruntime\nthreads: 1\nruns_per_instance: 1\n"
        "batching: {max_batch_size: 4, max_queue_size: 8, max_queue_delay_ms: 50}\n"
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


@pytest.mark.parametrize("threads, runs", [(2, None), (1, None), (1, 1)])
def test_a_session_takes_two_runs_at_once_unless_told_otherwise(tmp_path, monkeypatch, threads, runs):
    """A second run on the same ONNX Runtime session fills the cores a run leaves idle: one session (no second copy
    of the model), whatever its threads, takes two runs at once on a machine of several cores (one on a single
    core); `runs_per_instance: 1` makes it take one."""
    name = f"runs_at_once_{threads}_{runs}"
    constant_model(tmp_path / name / "1" / "model.onnx", {"out": np.ones((1, 2), np.float32)})
    (tmp_path / name / "model.yaml").write_text(
        f"backend: onnxruntime\nthreads: {threads}\nbatching: {{max_batch_size: 1}}\n"
        + (f"runs_per_instance: {runs}\n" if runs else "")
    )
    sessions: set[int] = set()
    inside = threading.Barrier(2, timeout=2)  # passes only with two runs inside at once
    met: list[bool] = []
    run = OnnxRuntimeBackend.run

    def meeting(self, feeds):
        if feeds["images"][0, 0, 0, 0] == 1:  # the requests below (not the warm-up or measuring)
            sessions.add(id(self))
            try:
                inside.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)
        return run(self, feeds)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", meeting)
    with ThreadPoolExecutor(2) as pool:
        repository = ModelRepository(tmp_path, pool, Limits())
        repository.load_all()
        handle = repository.get(name)

        async def two() -> list:
            return await asyncio.gather(*(handle.infer({"images": np.ones((1, 3, 8, 8), np.float32)}) for _ in "ab"))

        answers = asyncio.run(two())
        asyncio.run(repository.close_all())
    assert [answer["out"].tolist() for answer in answers] == [[[1.0, 1.0]]] * 2
    assert len(sessions) == 1  # both on the one session
    assert met == ([False, False] if runs == 1 or (os.cpu_count() or 1) == 1 else [True, True])
