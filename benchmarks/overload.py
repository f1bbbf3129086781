"""Admission by expected wait (issue 16): latency of the accepted requests at twice the measured capacity, without
and with a queue-wait budget (`serve --max-queue-wait-ms`), on the bundled person detector.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/overload.py --out benchmarks/results   # → results/overload.md

Steps: start the server without a budget; record the expected detections of each image; measure capacity with a
short closed loop (4 clients); then, for each server (no budget, then a fresh one with `--budget-ms`): a warm-up
of `--warmup` seconds at the overload rate, then `--duration` seconds measured, an open loop of valid images at
`--overload` x capacity (the same rate for both). Every 200 is checked against the expected detections; a 429
is counted as refused, with how long the refusal took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from soak import (
    HERE,
    IMAGES,
    MODEL,
    _post,
    _ready,
    _results,
    capacity,
    expected_answers,
    free_port,
    paced,
    same_detections,
)


@dataclass
class Run:
    """What happened to every request sent in one measured window."""

    outcomes: Counter = field(default_factory=Counter)
    accepted_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)


def start(port: int, *flags: str) -> subprocess.Popen:
    """`kakehashi serve` (the bundled model, no gRPC) on `port`, once it is ready."""
    command = [sys.executable, "-m", "kakehashi", "serve", "--port", str(port), "--grpc-port", "0", *flags]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not _ready(f"http://127.0.0.1:{port}"):
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit("the server did not become ready")
        time.sleep(0.1)
    return server


async def one(session: aiohttp.ClientSession, url: str, body: bytes, expected: list, run: Run) -> None:
    started = time.perf_counter()
    try:
        status, answer = await _post(session, url, body)
    except aiohttp.ClientError as exc:
        run.outcomes[f"failed: {type(exc).__name__}"] += 1
        return
    elapsed = (time.perf_counter() - started) * 1000
    if status == 429:
        run.outcomes["refused"] += 1
        run.refused_ms.append(elapsed)
    elif status != 200:
        run.outcomes[f"status {status}"] += 1
    elif not same_detections(_results(answer), expected):
        run.outcomes["wrong"] += 1
    else:
        run.outcomes["accepted"] += 1
        run.accepted_ms.append(elapsed)


async def open_loop(url: str, rate: float, seconds: float, images: dict[str, bytes], expected: dict) -> Run:
    """Send valid images at `rate` per second for `seconds`, whatever the answers; wait for every answer."""
    run, names, tasks = Run(), list(images), []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4096)) as session:
        async for index in paced(rate, seconds):
            name = names[index % len(names)]
            tasks.append(asyncio.ensure_future(one(session, url, images[name], expected[name], run)))
        await asyncio.gather(*tasks)
    return run


def percentiles(values: list[float]) -> str:
    if not values:
        return "– | –"
    return f"{np.percentile(values, 50):.0f} | {np.percentile(values, 99):.0f}"


async def calibrate(url: str, images: dict[str, bytes]) -> tuple[dict, float]:
    """Each image's expected detections, and the capacity (answers per second, closed loop of 4 clients)."""
    async with aiohttp.ClientSession() as session:
        expected = await expected_answers(session, url, images)
        return expected, await capacity(session, url, images["astronaut.png"], 10.0)


def row(label: str, run: Run, elapsed: float) -> str:
    """One server's line of the report table."""
    accepted, refused = run.outcomes["accepted"], run.outcomes["refused"]
    others = ", ".join(f"{k} {v}" for k, v in sorted(run.outcomes.items()) if k not in ("accepted", "refused"))
    return (
        f"| {label} | {sum(run.outcomes.values())} | {accepted} ({accepted / elapsed:.1f}/s) "
        f"| {percentiles(run.accepted_ms)} | {refused} | {percentiles(run.refused_ms)} | {others or '0'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--overload", type=float, default=2.0, help="Arrival rate as a multiple of capacity.")
    parser.add_argument("--budget-ms", type=float, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    images = {p.name: p.read_bytes() for p in sorted(IMAGES.glob("*.png"))}
    budget = ("--max-queue-wait-ms", f"{args.budget_ms:g}")
    rows, rate, rps, expected = [], 0.0, 0.0, {}
    for flags in ((), budget):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(port, *flags)
        try:
            if not rate:
                expected, rps = asyncio.run(calibrate(url, images))
                rate = rps * args.overload
            asyncio.run(open_loop(url, rate, args.warmup, images, expected))
            started = time.perf_counter()
            run = asyncio.run(open_loop(url, rate, args.duration, images, expected))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(60)
        rows.append(row(" ".join(flags) or "no budget", run, elapsed))
        print(rows[-1], flush=True)
    lines = [
        f"# Overload with and without a queue-wait budget ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores)",
        "",
        f"Bundled `{MODEL}`, default model.yaml; capacity {rps:.1f} req/s measured first (closed loop, 4 clients); "
        f"then for each server {args.warmup:.0f} s warm-up and {args.duration:.0f} s measured, an open loop of "
        f"valid images at {rate:.1f} req/s ({args.overload:.1f}x), every answer checked. Latencies in ms, from "
        "sending to the whole answer; accepted per second from the first request sent to the last answer.",
        "",
        "| server | sent | accepted | accepted p50 | p99 | refused (429) | refusal p50 | p99 | other |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
