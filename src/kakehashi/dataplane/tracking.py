"""Per-request bookkeeping for every transport: in flight while open, then counted and timed by outcome."""

from __future__ import annotations

import asyncio
import functools
import time

from kakehashi import metrics

_OUTCOMES = {429: "rejected", 503: "unavailable", 504: "timeout", 499: "cancelled"}
CANCELLED = 499  # the client went away before its answer (nginx's code; nothing is sent)


def outcome(status: int) -> str:
    if status < 400:
        return "success"
    return _OUTCOMES.get(status, "invalid" if status < 500 else "error")


@functools.cache
def _in_flight(protocol: str):
    return metrics.IN_FLIGHT.labels(protocol=protocol)


class RequestTracker:
    """One request's metrics: in flight while open, then counted and timed by model, version and outcome. `series`
    is set once the model version is known; the status is the answer's, or the error's (its `status`, or a
    framework's `status_code`); `gone` names the exceptions that mean the client left (counted as cancelled)."""

    def __init__(self, protocol: str, gone: tuple[type[BaseException], ...] = ()) -> None:
        self.protocol = protocol
        self.series: metrics.RequestSeries = metrics.UNATTRIBUTED
        self.status = 200
        self._gone: tuple[type[BaseException], ...] = (asyncio.CancelledError, *gone)
        self._in_flight = _in_flight(protocol)

    def __enter__(self) -> RequestTracker:
        self._started = time.perf_counter()
        self._in_flight.inc()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, self._gone):
            self.status = CANCELLED
        elif error is not None:
            status = getattr(error, "status", None) or getattr(error, "status_code", None)
            self.status = status if isinstance(status, int) else 500
        self._in_flight.dec()
        self.series.record(self.protocol, outcome(self.status), time.perf_counter() - self._started)
