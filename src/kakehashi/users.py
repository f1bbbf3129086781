"""The requests using a servable, counted so that closing it lets them finish first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Users:
    """How many requests use a servable now (each transport's request holds it while it runs)."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def serving(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1

    async def gone(self, grace_seconds: float) -> None:
        """Return once no request uses the servable, or after `grace_seconds`."""
        deadline = time.perf_counter() + grace_seconds
        while self.count and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
