"""Give memory the process no longer uses back to the system: glibc keeps freed blocks for reuse, so after a burst
of requests (decoded images, tensors, runtime scratch) or released runtime sessions the resident memory would stay
at its peak while the server rests."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)
# how long requests must have stopped before memory is given back: the runtimes then run one row each to shrink to
# it, and the next request allocates again, so a model asked every few seconds keeps its memory
QUIET_SECONDS = 5.0


def trim() -> None:
    """Return the free pages of every malloc arena to the system (not glibc: its allocator decides)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def give_back_freed_memory() -> None:
    """Collect unreachable objects first (released sessions may sit in reference cycles), then trim."""
    gc.collect()
    trim()


async def rest_when_idle(
    requests: Callable[[], int],
    in_flight: Callable[[], int],
    give_back: Callable[[], Awaitable[bool]],
    quiet: float = QUIET_SECONDS,
) -> None:
    """Await `give_back()` once each time requests stop: when `requests()` (a count of requests begun) has moved since
    the last time and then stayed still with none in flight over a check every `quiet` seconds (so between `quiet`
    and twice that after the last request began). `give_back` returns False when it could not rest yet (a model
    still measuring): it is asked again at the next check. Runs until cancelled."""
    rested_at = seen = requests()
    while True:
        await asyncio.sleep(quiet)
        count = requests()
        if count == seen and not in_flight() and count != rested_at:
            try:
                if await give_back():
                    rested_at = count
                    log.debug("requests stopped: memory given back to the system")
            except Exception:  # memory kept is no request's fault: say so, and try again at the next rest
                log.exception("giving back memory at rest failed")
                rested_at = count
        seen = count
