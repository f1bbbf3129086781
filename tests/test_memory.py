"""Memory given back to the system once requests stop."""

from __future__ import annotations

import asyncio
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import IMAGES
from kakehashi.memory import rest_when_idle
from kakehashi.protocols.vision import parse_params
from kakehashi.repository.config import ServerDefaults
from kakehashi.repository.handle import ModelHandle
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, coco_model_path
from onnx_builders import tiny_model

QUIET = 0.2
_POOL = ThreadPoolExecutor(2)


async def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_memory_is_given_back_once_each_time_requests_stop():
    async def scenario() -> None:
        state = {"begun": 0, "open": 0, "ready": True}
        given: list[int] = []
        refused = []  # the calls made while a model could not rest

        async def give_back() -> bool:
            if not state["ready"]:
                refused.append(state["begun"])
                return False
            given.append(state["begun"])
            return True

        begun, open_ = (lambda: state["begun"]), (lambda: state["open"])
        watcher = asyncio.create_task(rest_when_idle(begun, open_, give_back, QUIET))
        try:
            await asyncio.sleep(QUIET * 3)
            assert given == []  # nothing served yet: nothing to give back
            for _ in range(30):  # requests keep coming: not resting
                state["begun"] += 1
                await asyncio.sleep(QUIET / 10)
            assert given == []
            await _until(lambda: given == [30])  # they stopped: once
            await asyncio.sleep(QUIET * 3)
            assert given == [30]  # still resting: not again
            state["begun"], state["open"] = 31, 1  # a long request: in flight, not resting
            await asyncio.sleep(QUIET * 3)
            assert given == [30]
            state["open"], state["ready"] = 0, False  # it ended, but a model could not rest yet: asked again
            await _until(lambda: len(refused) >= 2)
            assert given == [30] and set(refused) == {31}
            state["ready"] = True
            await _until(lambda: given == [30, 31])
            await asyncio.sleep(QUIET * 3)
            assert given == [30, 31]  # rested: not asked again
        finally:
            watcher.cancel()

    asyncio.run(scenario())


def test_models_rest_only_once_every_one_is_measured_and_answer_the_same_after(tmp_path, monkeypatch):
    monkeypatch.setenv("KAKEHASHI_CACHE_DIR", str(tmp_path / "decisions"))  # a first start: measured after READY
    folder = tmp_path / "models" / "coco"
    shutil.copytree(coco_model_path(), folder)
    tiny_model(tmp_path / "models" / "tiny" / "1" / "model.onnx")  # another model, ready and measuring nothing
    (tmp_path / "models" / "tiny" / "model.yaml").write_text("task: tensor\nwarmup: false\n")
    released: list[str] = []
    release = ModelHandle.release_memory
    monkeypatch.setattr(ModelHandle, "release_memory", lambda h: released.append(h.name) or release(h))
    repository = ModelRepository(folder.parent, _POOL, Limits(), ServerDefaults(measure_in_background=True))
    repository.load_all()
    handle = repository.get("coco")
    assert isinstance(handle, ModelHandle) and repository.get("tiny").ready
    image = (IMAGES / "astronaut.png").read_bytes()
    params = parse_params({}, handle.config.defaults)
    measuring = handle._measuring
    assert measuring is not None and measuring.is_alive()  # (it times both runtimes: seconds)
    assert asyncio.run(repository.rest()) is False  # its runs are under way: asked again at the next rest
    assert released == []  # no model released a thing: its runs would have slowed the timings
    measuring.join(120)
    before = asyncio.run(handle.predict([image], params))[0].results
    assert asyncio.run(repository.rest()) is True
    assert sorted(released) == ["coco", "tiny"]
    assert asyncio.run(handle.predict([image], params))[0].results == before
