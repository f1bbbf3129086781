"""Memory given back to the system once requests stop."""

from __future__ import annotations

import asyncio
import time

from kakehashi.memory import rest_when_idle

QUIET = 0.05


async def _until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_memory_is_given_back_once_each_time_requests_stop():
    async def scenario() -> None:
        state = {"begun": 0, "open": 0}
        given: list[int] = []

        async def give_back() -> None:
            given.append(state["begun"])

        begun, open_ = (lambda: state["begun"]), (lambda: state["open"])
        watcher = asyncio.create_task(rest_when_idle(begun, open_, give_back, QUIET))
        try:
            await asyncio.sleep(QUIET * 4)
            assert given == []  # nothing served yet: nothing to give back
            for _ in range(20):  # requests keep coming: not resting
                state["begun"] += 1
                await asyncio.sleep(QUIET / 3)
            assert given == []
            await _until(lambda: given == [20])  # they stopped: once
            await asyncio.sleep(QUIET * 4)
            assert given == [20]  # still resting: not again
            state["begun"], state["open"] = 21, 1  # a long request: in flight, not resting
            await asyncio.sleep(QUIET * 4)
            assert given == [20]
            state["open"] = 0
            await _until(lambda: given == [20, 21])
        finally:
            watcher.cancel()

    asyncio.run(scenario())
