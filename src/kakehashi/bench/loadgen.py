"""Closed-loop (fixed concurrency) and open-loop (fixed rate) load with a warm-up and a measurement window,
over HTTP (aiohttp) or gRPC (`grpc://host:port` targets, grpc.aio)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from kakehashi.bench.payloads import Payload


@dataclass
class StepResult:
    """One load step: throughput, latency percentiles (ms) and errors, over the measurement window."""

    mode: str
    level: float
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    errors: Counter = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "mode": self.mode,
            "level": self.level,
            "requests": self.requests,
            "throughput_rps": round(self.throughput, 2),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
        }


class _Window:
    """Collects results that complete inside [start, end)."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.count = 0

    def record(self, sent: float, done: float, problem: str | None) -> None:
        if self.start <= done < self.end:
            if problem is None:
                self.count += 1
                self.latencies.append((done - sent) * 1000)
            else:
                self.errors[problem] += 1


Send = Callable[[bytes], Awaitable[str | None]]  # one request body → None if answered right, else the problem


@asynccontextmanager
async def _http(base_url: str, payload: Payload, connections: int, timeout: float) -> AsyncIterator[Send]:
    url = base_url + payload.path
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def send(body: bytes) -> str | None:
            try:
                async with session.post(
                    url, data=body, headers=payload.headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    return payload.check(response.status, response.headers, await response.read())
            except TimeoutError:
                return "timeout"
            except aiohttp.ClientError as exc:
                return type(exc).__name__

        yield send


@asynccontextmanager
async def _grpc(target: str, payload: Payload, connections: int, timeout: float) -> AsyncIterator[Send]:
    """Bodies are serialized request messages sent to the method `payload.path`; answers are checked as bytes."""
    import grpc

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(target.removeprefix("grpc://"), options=options) as channel:
        call = channel.unary_unary(payload.path)  # no (de)serializers: bytes in, bytes out

        async def send(body: bytes) -> str | None:
            try:
                return payload.check(200, {}, await call(body, timeout=timeout))
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        yield send


def _transport(target: str, payload: Payload, connections: int, timeout: float):
    opener = _grpc if target.startswith("grpc://") else _http
    return opener(target, payload, connections, timeout)


async def closed_loop(
    base_url: str, payload: Payload, concurrency: int, warmup: float, duration: float, timeout: float = 60.0
) -> StepResult:
    """`concurrency` workers each send a request as soon as their last one was answered."""
    start = time.perf_counter() + warmup
    window = _Window(start, start + duration)
    bodies = itertools.cycle(payload.bodies)
    async with _transport(base_url, payload, concurrency, timeout) as send:

        async def worker() -> None:
            while time.perf_counter() < window.end:
                sent = time.perf_counter()
                problem = await send(next(bodies))
                window.record(sent, time.perf_counter(), problem)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return StepResult("concurrency", concurrency, window.count, duration, window.latencies, window.errors)


async def open_loop(
    base_url: str,
    payload: Payload,
    rate: float,
    warmup: float,
    duration: float,
    timeout: float = 60.0,
    max_outstanding: int = 2048,
) -> StepResult:
    """Requests start at a fixed `rate` per second whatever the answers; latency counts from the schedule."""
    start = time.perf_counter() + warmup
    window = _Window(start, start + duration)
    bodies = itertools.cycle(payload.bodies)
    outstanding: set[asyncio.Task] = set()
    async with _transport(base_url, payload, max_outstanding, timeout) as send:

        async def one(scheduled: float, body: bytes) -> None:
            problem = await send(body)
            window.record(scheduled, time.perf_counter(), problem)

        began = time.perf_counter()
        for index in itertools.count():
            scheduled = began + index / rate
            if scheduled >= window.end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(outstanding) >= max_outstanding:
                window.record(scheduled, time.perf_counter(), "client: too many outstanding")
                continue
            task = asyncio.ensure_future(one(scheduled, next(bodies)))
            outstanding.add(task)
            task.add_done_callback(outstanding.discard)
        await asyncio.gather(*outstanding)
    return StepResult("rate", rate, window.count, duration, window.latencies, window.errors)
