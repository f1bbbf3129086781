"""Soak and overload (issue 5): drive `kakehashi serve` (the bundled person detector) at `--overload` times
(2 by default) its measured capacity with a mix of valid, invalid and cancelled requests, check every answer, and report.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/soak.py --duration 600 --out benchmarks/results   # the committed report
    .venv/bin/python benchmarks/soak.py --duration 60 --overload 3 --out /tmp/soak  # the CI version (a test)

Steps: start the server; record the expected detections of each image once; measure capacity with a short
closed loop; warm up with the soak's own load for a tenth of its duration (at least 20 s), so queues and
buffers reach their working size, and take the peak RSS during it as the baseline (a warm-up that refused nothing
was no overload: the capacity was measured while something else had the CPU, so the rate is doubled and the
warm-up repeated, up to 3 warm-ups); then an open loop at `--overload` × capacity for
`--duration` seconds: 80 % valid images (each answer compared with the expected detections: same classes,
boxes within 1 px, confidence within 0.01), 10 % invalid bodies (must get their 4xx), 10 % cancelled by the
client after a random 1–50 ms. Exit status 0 only if no accepted request failed or was wrong and RSS grew
less than 10 % after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import psutil

HERE = Path(__file__).parent
IMAGES = HERE.parent / "tests" / "data" / "images"
MODEL = "ssdlite-person"
PREDICT = f"/v1/models/{MODEL}/predict"
INVALID = [(b"this is not an image", 415), (IMAGES.joinpath("astronaut.png").read_bytes()[:300], 400), (b"", 400)]


@dataclass
class Tally:
    """What happened to every request sent in the measured window."""

    outcomes: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)

    def problem(self, kind: str, detail: str) -> None:
        self.outcomes[kind] += 1
        self.problems[f"{kind}: {detail[:120]}"] += 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def same_detections(got: list[dict], expected: list[dict]) -> bool:
    if [r["class"] for r in got] != [r["class"] for r in expected]:
        return False
    for a, b in zip(got, expected):
        if abs(a["confidence"] - b["confidence"]) > 0.01:
            return False
        if any(abs(a["box"][k] - b["box"][k]) > 1.0 for k in a["box"]):
            return False
    return True


async def expected_answers(session: aiohttp.ClientSession, url: str, images: dict[str, bytes]) -> dict[str, list]:
    answers = {}
    for name, data in images.items():
        async with session.post(url + PREDICT, data=data, headers={"content-type": "image/png"}) as response:
            answers[name] = (await response.json())["images"][0]["results"]
    return answers


async def capacity(
    session: aiohttp.ClientSession, url: str, data: bytes, seconds: float, concurrency: int = 4
) -> float:
    done, end = 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            async with session.post(url + PREDICT, data=data, headers={"content-type": "image/png"}) as response:
                await response.read()
                done += response.status == 200
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def one(session: aiohttp.ClientSession, url: str, kind: str, body: bytes, expect: object,
              tally: Tally, rng: random.Random) -> None:
    started = time.perf_counter()
    try:
        if kind == "cancelled":
            await asyncio.wait_for(_post(session, url, body), timeout=rng.uniform(0.001, 0.05))
            tally.outcomes["cancelled-but-answered"] += 1
            return
        status, answer = await _post(session, url, body)
    except TimeoutError:
        tally.outcomes["cancelled"] += 1
        return
    except aiohttp.ClientError as exc:
        tally.problem("failed", f"{kind}: {type(exc).__name__} {exc}")
        return
    if status in (429, 503):
        tally.outcomes["refused"] += 1
    elif kind == "invalid":
        tally.outcomes["invalid-answered" if status == expect else "failed"] += 1
        if status != expect:
            tally.problem("failed", f"invalid body got {status}, expected {expect}")
    elif status != 200:
        tally.problem("failed", f"valid image got {status}: {answer[:100]!r}")
    elif not same_detections(_results(answer), expect):
        tally.problem("wrong", answer[:200].decode(errors="replace"))
    else:
        tally.outcomes["accepted"] += 1
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)


def _results(answer: bytes) -> list[dict]:
    import orjson
    return orjson.loads(answer)["images"][0]["results"]


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(url + PREDICT, data=body, headers={"content-type": "application/octet-stream"},
                            timeout=aiohttp.ClientTimeout(total=120)) as response:
        return response.status, await response.read()


async def paced(rate: float, seconds: float) -> AsyncIterator[int]:
    """An open loop's send times: yields the index of each request when it is due, `rate` a second for `seconds`."""
    began = time.perf_counter()
    for index in range(int(rate * seconds)):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield index


async def soak(url: str, rate: float, seconds: float, images: dict[str, bytes], expected: dict[str, list],
               seed: int = 0) -> Tally:
    rng, tally = random.Random(seed), Tally()
    names = list(images)
    tasks: set[asyncio.Task] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4096)) as session:
        async for index in paced(rate, seconds):
            draw = rng.random()
            if draw < 0.8:
                name = names[index % len(names)]
                job = one(session, url, "valid", images[name], expected[name], tally, rng)
            elif draw < 0.9:
                body, status = INVALID[index % len(INVALID)]
                job = one(session, url, "invalid", body, status, tally, rng)
            else:
                job = one(session, url, "cancelled", images[names[0]], None, tally, rng)
            task = asyncio.ensure_future(job)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return tally


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def peak_rss_during(pid: int, work: Awaitable[Tally]) -> tuple[float, Tally]:
    """Run `work`, sampling the server's RSS every 0.5 s; the highest sample and what `work` returned."""
    task = asyncio.ensure_future(work)
    peak = rss_mb(pid)
    while not task.done():
        await asyncio.sleep(0.5)
        peak = max(peak, rss_mb(pid))
    return peak, await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--overload", type=float, default=2.0, help="Arrival rate as a multiple of capacity.")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "kakehashi", "serve", "--port", str(port), "--grpc-port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _ready(url):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.1)
        images = {p.name: p.read_bytes() for p in sorted(IMAGES.glob("*.png"))}

        async def measure() -> tuple[dict, float]:
            async with aiohttp.ClientSession() as session:
                expected = await expected_answers(session, url, images)
                return expected, await capacity(session, url, images["astronaut.png"], min(20.0, args.duration / 6))

        expected, rps = asyncio.run(measure())
        if not rps:
            raise SystemExit("the server answered no request while its capacity was measured")
        rate = rps * args.overload
        warmup = max(20.0, args.duration / 10)
        # the same load, so queues and buffers reach their working size; the baseline is the peak RSS during it
        warm_ups: list[str] = []  # each warm-up's rate and refusals, for the report
        for attempt in range(3):
            warm = soak(url, rate, warmup, images, expected, seed=1 + attempt)
            rss_start, warmed = asyncio.run(peak_rss_during(server.pid, warm))
            warm_ups.append(f"{rate:.1f} req/s: {warmed.outcomes['refused']} refused")
            if warmed.outcomes["refused"] or attempt == 2:
                break
            rate *= 2  # nothing refused: the server kept up, so this was no overload
        started = time.perf_counter()
        tally = asyncio.run(soak(url, rate, args.duration, images, expected))
        elapsed = time.perf_counter() - started
        rss_end = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    growth = (rss_end - rss_start) / rss_start * 100
    latencies = np.array(tally.latencies_ms or [float("nan")])
    sent = sum(tally.outcomes.values())
    ok = tally.outcomes["failed"] == 0 and tally.outcomes["wrong"] == 0 and growth < 10
    lines = [
        f"# Soak and overload ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores)", "",
        f"Bundled `{MODEL}`; capacity {rps:.1f} req/s measured first (closed loop, 4 clients); then "
        f"{warmup:.0f} s warm-up and {args.duration:.0f} s measured, open loop at {rate:.1f} req/s "
        f"({rate / rps:.1f}x; warm-ups at {'; '.join(warm_ups)}): 80 % valid images "
        f"(checked against the expected detections), 10 % invalid bodies, 10 % cancelled by the client.", "",
        "| outcome | requests |", "|---|---|",
        *[f"| {kind} | {count} |" for kind, count in sorted(tally.outcomes.items())],
        f"| **sent** | {sent} (in {elapsed:.0f} s) |", "",
        f"- accepted (valid, 200, right detections): p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p99 {np.percentile(latencies, 99):.1f} ms",
        f"- refused (429/503): {tally.outcomes['refused']}; failed: {tally.outcomes['failed']}; "
        f"wrong: {tally.outcomes['wrong']}",
        f"- server RSS: peak during the warm-up {rss_start:.1f} MB, at the end {rss_end:.1f} MB ({growth:+.1f} %)",
        f"- verdict: {'PASS' if ok else 'FAIL'} (0 failed, 0 wrong, RSS growth < 10 %)",
        *([""] + [f"- problem x{count}: {text}" for text, count in tally.problems.most_common(10)]
          if tally.problems else []),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


def _ready(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
