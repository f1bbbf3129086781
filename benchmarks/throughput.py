"""Issue 3's benchmark, in ONE run: raw ONNX Runtime in-process vs Kakehashi's image endpoint (batching on/off),
a tiny model over OIP v2 JSON vs a plain FastAPI server, and start-up time / idle memory.

    .venv/bin/pip install -e '.[bench]' fastapi onnx psutil
    .venv/bin/python benchmarks/throughput.py --out benchmarks/results

Reads `../shared/models` and `../shared/images` (re-encoded as JPEG) by default.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from kakehashi.backends.base import Backend
from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.bench import loadgen, payloads
from kakehashi.repository.config import ModelConfig
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.images import Picture
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared"
sys.path.insert(0, str(HERE))
from tiny_model import build as build_tiny  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jpegs(source: Path, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted(source.iterdir()):
        image = Image.open(path).convert("RGB")
        out.append(target / f"{path.stem}.jpg")
        image.save(out[-1], quality=90)
    return out


def raw_limit(
    model: Path,
    images: Sequence[Path | Image.Image | Picture],
    batch: int,
    seconds: float,
    backend: Backend | None = None,
    warmup: float = 0.0,
    config: ModelConfig | None = None,
    instances: int = 1,
) -> float:
    """Images/s of a plain in-process loop: decode (files; decoded frames are taken as they are) + letterbox,
    inference (ONNX Runtime, or `backend`: e.g. an OpenVINO one), post-processing, with the model's `config` (its
    model.yaml) if given. The loop runs untimed for `warmup` seconds (at least one batch) first. `instances` > 1:
    that many ONNX Runtime sessions with an equal share of the cores' threads, each looping in a thread of its own."""
    assert backend is None or instances == 1, "several instances are ONNX Runtime sessions made here"
    threads = 0 if instances == 1 else max(1, (os.cpu_count() or 1) // instances)
    backends = [backend] if backend else [OnnxRuntimeBackend(model, threads=threads) for _ in range(instances)]
    config = config or ModelConfig()
    task = resolve_task(backends[0], config, model)
    assert task is not None, f"{model} has no image input"
    data = [image.read_bytes() if isinstance(image, Path) else image for image in images]
    params = PredictParams(conf=config.defaults.conf, iou=config.defaults.iou)

    def one_batch(runner: Backend, first: int) -> None:
        prepared = [prepare_image(data[(first + i) % len(data)], task.input, params, 10**9) for i in range(batch)]
        outputs = runner.run({task.input.name: np.stack([p.tensor for p in prepared])})
        for row, item in enumerate(prepared):
            task.postprocess({k: v[row] for k, v in outputs.items()}, item, params)

    def loop(runner: Backend, first: int, until: float, done: list[int]) -> None:
        while time.perf_counter() < until:
            one_batch(runner, first + done[0])
            done[0] += batch

    for runner in backends:
        one_batch(runner, 0)  # first runs are slow: not timed
    _in_threads(backends, loop, time.perf_counter() + warmup)
    started = time.perf_counter()
    done = _in_threads(backends, loop, started + seconds)
    return done / (time.perf_counter() - started)


def _in_threads(backends: list[Backend], loop, until: float) -> int:
    """`loop(backend, first image, until, counter)` for each backend, in threads of their own when more than one,
    each from an image of its own; the rows done in all."""
    counters = [[0] for _ in backends]
    arguments = [(backend, 7 * index, until, counters[index]) for index, backend in enumerate(backends)]
    if len(backends) == 1:
        loop(*arguments[0])
    else:
        threads = [threading.Thread(target=loop, args=args) for args in arguments]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(counter[0] for counter in counters)


class Process:
    """A server subprocess (its output to `log`, if given); `ready` waits for 200 on a path and returns the seconds
    it took."""

    def __init__(
        self, args: list[str], url: str, env: dict | None = None, cwd: Path | None = None, log: Path | None = None
    ) -> None:
        self.started = time.perf_counter()
        self.wall = time.time()  # the same moment on the wall clock (for log timestamps)
        self.url = url
        self.log = log
        output = log.open("ab") if log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )
        if log is not None:
            output.close()  # the child has its own copy

    def check_running(self) -> None:
        """Raise if the process has exited (with the end of its log, if any)."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log is not None else ""
            raise RuntimeError(f"{self.url}: the server exited with code {self.process.returncode}\n{tail}")

    def ready(self, path: str = "/v2/health/ready", timeout: float = 120) -> float:
        while time.perf_counter() - self.started < timeout:
            self.check_running()
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError(self.url)

    def rss_mb(self) -> float:
        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def kakehashi(model_path: Path) -> Process:
    port = free_port()
    return Process(
        [sys.executable, "-m", "kakehashi", "serve", str(model_path), "--port", str(port)], f"http://127.0.0.1:{port}"
    )


def sweep(url: str, payload: payloads.Payload, levels: list[int], warmup: float, duration: float) -> list:
    return [asyncio.run(loadgen.closed_loop(url, payload, level, warmup, duration)) for level in levels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    parser.add_argument("--images", type=Path, default=SHARED / "images")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kakehashi-bench-"))
    images = jpegs(args.images, work / "jpeg")
    rows: list[dict] = []

    def add(section: str, target: str, level: object, rps: float, step=None) -> None:
        row = {"section": section, "target": target, "level": level, "throughput": round(rps, 2)}
        if step is not None:
            row |= {k: step.row()[k] for k in ("p50_ms", "p90_ms", "p99_ms", "errors")}
        rows.append(row)
        print(row, flush=True)

    for name in ("yolo11n-coco-random-640-dynamic", "yolo26n-coco-random-640-e2e-dynamic"):
        source = args.models / f"{name}.onnx"
        for batch in (1, 2, 4, 8):
            add(
                f"{name} raw ONNX Runtime in-process (images/s)",
                "raw",
                batch,
                raw_limit(source, images, batch, args.duration),
            )
        for mode, yaml in (("batching on", ""), ("batching off", "batching: {max_batch_size: 1}\n")):
            repo = work / f"{name}-{mode.replace(' ', '-')}"
            (repo / "yolo" / "1").mkdir(parents=True, exist_ok=True)
            (repo / "yolo" / "1" / "model.onnx").write_bytes(source.read_bytes())
            (repo / "yolo" / "model.yaml").write_text(yaml or "{}\n")
            server = kakehashi(repo)
            server.ready()
            payload = payloads.predict_payload("yolo", images)
            for step in sweep(server.url, payload, [1, 4, 16, 64], args.warmup, args.duration):
                add(f"{name} Kakehashi image endpoint, {mode} (req/s)", "kakehashi", step.level, step.throughput, step)
            server.stop()

    tiny = work / "tiny"
    build_tiny(tiny / "tiny" / "1" / "model.onnx")
    (tiny / "tiny" / "model.yaml").write_text("task: tensor\n")
    port = free_port()
    baseline = Process(
        [sys.executable, "-m", "uvicorn", "baseline_fastapi:app", "--port", str(port), "--log-level", "warning"],
        f"http://127.0.0.1:{port}",
        env={"KAKEHASHI_BASELINE_MODEL": str(tiny / "tiny" / "1" / "model.onnx")},
        cwd=HERE,
    )
    server = kakehashi(tiny)
    for label, process in (("plain FastAPI + uvicorn + onnxruntime", baseline), ("Kakehashi", server)):
        process.ready()
        meta = httpx.get(f"{process.url}/v2/models/tiny").json()
        payload = payloads.infer_payload("tiny", meta["inputs"], {"x": [1, 3, 64, 64]}, [{"name": "y"}])
        for step in sweep(process.url, payload, [1, 16], args.warmup, args.duration):
            add(f"tiny model 1x3x64x64, OIP v2 JSON infer: {label} (req/s)", label, step.level, step.throughput, step)
        process.stop()

    starts, memory = [], []
    for _ in range(3):
        port = free_port()
        process = Process([sys.executable, "-m", "kakehashi", "serve", "--port", str(port)], f"http://127.0.0.1:{port}")
        starts.append(process.ready())
        time.sleep(2)
        memory.append(process.rss_mb())
        process.stop()
    add(
        "bundled default model: process start to ready, median of 3 (s)", "kakehashi", "start", float(np.median(starts))
    )
    add("bundled default model: idle RSS, median of 3 (MB)", "kakehashi", "rss", float(np.median(memory)))

    with (args.out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["section", "target", "level", "throughput", "p50_ms", "p90_ms", "p99_ms", "errors"]
        )
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores)", ""]
    section = None
    for row in rows:
        if row["section"] != section:
            section = row["section"]
            lines += [
                "",
                f"## {section}",
                "",
                "| level | value | p50 ms | p90 ms | p99 ms | errors |",
                "|---|---|---|---|---|---|",
            ]
        lines.append(
            f"| {row['level']} | {row['throughput']} | {row.get('p50_ms', '')} | {row.get('p90_ms', '')} | "
            f"{row.get('p99_ms', '')} | {row.get('errors', '')} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
