"""Moving large parsing and encoding work off the event loop, so it keeps doing only I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

OFF_LOOP_BYTES = 64 * 1024  # smaller payloads are handled faster inline than a thread hop costs
T = TypeVar("T")


async def off_loop(pool: Executor, size: int, function: Callable[..., T], *args) -> T:
    """`function(*args)`, in `pool` when `size` (bytes handled) is large, else inline."""
    if size < OFF_LOOP_BYTES:
        return function(*args)
    return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
