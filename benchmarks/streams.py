"""Live streams, one run: 1, 4 and 8 simultaneous 25 fps sources on the bundled COCO detector (YOLOX-Nano, 416),
against the runtime's raw rate in-process on the same decoded frames.

    .venv/bin/python benchmarks/streams.py [--video ../shared/videos/vtest.avi] [--seconds 20] [--sources 1,4,8]

The video (default: OpenCV's pedestrian sample, 768x576 at 10 fps) is re-encoded at 25 fps, so each source offers
25 frames a second (the walkers move 2.5x faster). Each source is a looping file read by the server as a camera (paced
at its frame rate), with tracking, a zone and a line. For each number of sources the server runs with that many
streams; over a window after a warm-up it reports the frames inferred per second in total, against the raw rate
and against what the sources offer, the share of frames dropped (replaced by a newer one before inference took them),
and the lag from a frame's decode to its results pushed to a Server-Sent Events follower (p50, p99). The raw rate is
the fastest plain loop in one process on decoded frames (prepare with swscale + ONNX Runtime + post-processing; no
HTTP, no decoding, no tracking): one session with every core's threads, or one single-thread session per core each
looping in its own thread, at batch 1 and at the server's batch size. Decoding every frame read is work the raw rate
does not do: its CPU cost is measured in-process and its share of the cores reported. Both sides run ONNX Runtime
at f32, so the ratio compares serving with the same runtime. Writes `results/streams.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import av
import httpx
import numpy as np
import orjson

from kakehashi.repository.config import load_model_config
from kakehashi.settings import coco_model_path
from kakehashi.streams.source import Converters, Frame

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from throughput import Process, free_port, raw_limit  # noqa: E402

SHARED = HERE.parent.parent / "shared"
FPS = 25
MODEL = "yolox-nano-coco"


def at_25_fps(video: Path, target: Path, seconds: float = 30.0) -> tuple[Path, list[Frame]]:
    """`video` re-encoded with its frames at 25 fps (H.264, at most `seconds`), and every tenth frame of it as the
    server decodes it (in the decoder's pixels: the raw loop, like the server, scales them with swscale)."""
    with av.open(str(video)) as source, av.open(str(target), "w") as output:
        stream = output.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23", "g": str(FPS)})
        video_in = source.streams.video[0]
        stream.width, stream.height, stream.pix_fmt = video_in.width, video_in.height, "yuv420p"
        for index, frame in enumerate(source.decode(video_in)):
            if index >= seconds * FPS:
                break
            output.mux(stream.encode(av.VideoFrame.from_image(frame.to_image())))
        output.mux(stream.encode(None))
    converters = Converters()
    with av.open(str(target)) as encoded:
        frames = [
            Frame(frame, index, 0.0, None, converters)
            for index, frame in enumerate(encoded.decode(video=0))
            if index % 10 == 0
        ]
    return target, frames


def decode_cpu_seconds(video: Path) -> float:
    """CPU seconds (every thread of this process) to decode one frame of `video`, as the server's sources do."""
    with av.open(str(video)) as container:
        started, frames = time.process_time(), 0
        for _ in container.decode(video=0):
            frames += 1
    return (time.process_time() - started) / frames


def raw_rate(frames: list[Frame], batch: int, seconds: float, instances: int) -> float:
    """Frames/s of the plain in-process loop on decoded frames: letterbox (swscale, as the server does), ONNX
    Runtime, post-processing; `instances` sessions sharing the cores, each looping in its own thread."""
    folder = coco_model_path()
    config = load_model_config(folder / "model.yaml")
    return raw_limit(folder / "1" / "model.onnx", frames, batch, seconds, config=config, instances=instances)


def stream_config(video: Path, sources: int, outbox: Path) -> str:
    entries = []
    for index in range(sources):
        entries.append(
            f"""  - name: cam{index}
    url: {video}
    loop: true
    zones: [{{name: left, points: [[0, 0], [384, 0], [384, 576], [0, 576]]}}]
    lines: [{{name: middle, start: [384, 0], end: [384, 576]}}]
    rules: [{{kind: line, name: crossed, line: middle}}]
"""
        )
    return "streams:\n" + "".join(entries) + f"events:\n  outbox: {outbox}\n"


async def follow_lags(url: str, names: list[str], seconds: float) -> list[float]:
    """Each result's lag (ms) from every stream's SSE results over `seconds`."""
    lags: list[float] = []

    async def one(session: aiohttp.ClientSession, name: str) -> None:
        async with session.get(f"{url}/v1/streams/{name}/results") as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    lags.append(orjson.loads(line[6:])["lag_ms"])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.ensure_future(one(session, name)) for name in names]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return lags


def totals(url: str) -> dict[str, float]:
    streams = httpx.get(f"{url}/v1/streams", timeout=10).json()["streams"]
    sums = {"inferred": 0.0, "read": 0.0, "dropped": 0.0, "undecoded": 0.0}
    for stream in streams:
        sums["inferred"] += stream["inferred"]
        for counter in ("read", "dropped", "undecoded"):
            sums[counter] += stream["source"][counter]
    sums["running"] = sum(stream["state"] == "running" for stream in streams)
    return sums


def measure(video: Path, sources: int, seconds: float, warmup: float, work: Path) -> dict:
    config = work / f"streams-{sources}.yaml"
    config.write_text(stream_config(video, sources, work / f"events-{sources}.db"))
    port = free_port()
    args = [sys.executable, "-m", "kakehashi", "serve", str(coco_model_path()), "--port", str(port)]
    args += ["--grpc-port", "0", "--backend", "onnxruntime", "--precision", "f32", "--config", str(config)]
    env = {"KAKEHASHI_CACHE_DIR": str(work / "cache")}
    server = Process(args, f"http://127.0.0.1:{port}", env=env, log=work / f"server-{sources}.log")
    try:
        server.ready()
        deadline = time.monotonic() + 60
        while totals(server.url)["running"] < sources and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(warmup)
        before, started = totals(server.url), time.perf_counter()
        lags = asyncio.run(follow_lags(server.url, [f"cam{i}" for i in range(sources)], seconds))
        after, elapsed = totals(server.url), time.perf_counter() - started
        config = httpx.get(f"{server.url}/v2/models/{MODEL}/config").json()  # the measured batch size
        batch = config.get("dynamic_batching", {}).get("preferred_batch_size", [1])[0]
    finally:
        server.stop()
    read = after["read"] - before["read"]
    return {
        "sources": sources,
        "offered": sources * FPS,
        "read_fps": read / elapsed,
        "decoded_fps": (read - (after["undecoded"] - before["undecoded"])) / elapsed,
        "inferred_fps": (after["inferred"] - before["inferred"]) / elapsed,
        "dropped_share": (after["dropped"] - before["dropped"]) / read if read else 0.0,
        "lag_p50": float(np.percentile(lags, 50)) if lags else float("nan"),
        "lag_p99": float(np.percentile(lags, 99)) if lags else float("nan"),
        "batch": max(1, int(batch)),
    }


def _decoding_aside(row: dict, raw: float) -> str:
    """Inferred fps ÷ the raw rate left once decoding has taken its share; "—" when the sources, not the model,
    set the pace."""
    if row["read_fps"] < raw:
        return "—"
    return f"{row['inferred_fps'] / (raw * (1 - row['decode_share'])):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=SHARED / "videos" / "vtest.avi")
    parser.add_argument("--sources", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "streams.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-streams-"))
    video, frames = at_25_fps(args.video, work / "video-25fps.mp4")
    rows = [measure(video, int(n), args.seconds, args.warmup, work) for n in args.sources.split(",")]
    batches = sorted({1, *(row["batch"] for row in rows)})
    layouts = sorted({1, os.cpu_count() or 1})  # one session with every core's threads; one single-thread per core
    raw = {(n, b): raw_rate(frames, b, 10.0, n) for n in layouts for b in batches}
    best = max(raw.values())
    instances = load_model_config(coco_model_path() / "model.yaml").instances
    decode_cost = decode_cpu_seconds(video)
    for row in rows:  # the cores' time decoding the frames read (dropped ones too): work the raw rate does not do
        row["decode_share"] = row["decoded_fps"] * decode_cost / (os.cpu_count() or 1)
    lines = [
        "# Live streams: sources at 25 fps on the bundled COCO detector (YOLOX-Nano 416, ONNX Runtime f32)",
        "",
        f"One run of `benchmarks/streams.py` on {os.cpu_count()} cores, {args.seconds:.0f} s per step after a "
        f"{args.warmup:.0f} s warm-up; video: `{args.video.name}` re-encoded at 25 fps.",
        "Raw rate in-process (prepare with swscale as the server does + ONNX Runtime + post-processing, on decoded "
        "frames), by sessions × batch size: "
        + ", ".join(f"{n} × {b}: {r:.1f}/s" for (n, b), r in raw.items())
        + f" (several sessions share the cores' threads, each in a thread of its own); the best, {best:.1f}/s, is "
        "the raw rate below.",
        f"The server: the bundled model's configuration (`instances: {instances}`), batch size measured at load: "
        + ", ".join(sorted({str(row["batch"]) for row in rows}))
        + ".",
        "",
        f"Decoding a frame takes {decode_cost * 1000:.1f} ms of CPU on average (in-process); decoding is the share of"
        " the cores spent decoding the frames read (dropped ones too, but not those left undecoded while the model"
        " was behind), which the raw rate does not do; the last ratio sets it aside: inferred ÷ (raw × (1 −"
        " decoding)), where the model sets the pace.",
        "",
        "| sources | offered fps | read fps | inferred fps | ÷ raw rate | ÷ min(raw, offered) | dropped | undecoded | "
        "lag p50 | lag p99 | decoding | ÷ raw, decoding aside |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['sources']} | {row['offered']} | {row['read_fps']:.1f} | {row['inferred_fps']:.1f} | "
            f"{row['inferred_fps'] / best:.2f} | {row['inferred_fps'] / min(best, row['read_fps']):.2f} | "
            f"{row['dropped_share']:.0%} | {1 - row['decoded_fps'] / row['read_fps']:.0%} | "
            f"{row['lag_p50']:.0f} ms | {row['lag_p99']:.0f} ms | "
            f"{row['decode_share']:.0%} | {_decoding_aside(row, best)} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
