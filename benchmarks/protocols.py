"""Issue 4's benchmark, in ONE run: the same raw-tensor infer over OIP v2 JSON, the HTTP binary tensor extension
and gRPC, against ONNX Runtime called in-process on the same tensors (the runtime's limit).

    .venv/bin/pip install -e '.[bench]' onnx psutil
    .venv/bin/python benchmarks/protocols.py --out benchmarks/results

YOLO26n (random weights, 1x3x640x640 FP32 in, 1x300x6 out) from `../shared/models`, and the tiny model of
`tiny_model.py` (1x3x64x64) to show per-request overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.bench import loadgen, payloads
from throughput import SHARED, Process, free_port
from tiny_model import build as build_tiny

HERE = Path(__file__).parent


def raw_rows_per_second(model: Path, shape: list[int], seconds: float) -> float:
    backend = OnnxRuntimeBackend(model)
    feeds = {backend.inputs[0].name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    backend.run(feeds)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        backend.run(feeds)
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-protocols-"))
    cases = [("yolo26n", args.models / "yolo26n-coco-random-640-e2e-dynamic.onnx", [1, 3, 640, 640], [1, 4, 16]),
             ("tiny", build_tiny(work / "tiny.onnx"), [1, 3, 64, 64], [1, 16])]
    lines = [f"# Protocols: the same infer over JSON, binary and gRPC "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, one run)", ""]
    for name, model, shape, levels in cases:
        raw = raw_rows_per_second(model, shape, args.duration)
        repo = work / f"repo-{name}"
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").write_bytes(model.read_bytes())
        (repo / name / "model.yaml").write_text("task: tensor\n")
        port, grpc_port = free_port(), free_port()
        server = Process([sys.executable, "-m", "kakehashi", "serve", str(repo), "--port", str(port),
                          "--grpc-port", str(grpc_port)], f"http://127.0.0.1:{port}")
        server.ready()
        meta = httpx.get(f"{server.url}/v2/models/{name}").json()
        lines += [f"## {name}: input {shape} FP32; ONNX Runtime in-process: {raw:.1f} infer/s", "",
                  "| encoding | concurrency | req/s | × in-process | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
        for encoding in payloads.INFER_ENCODINGS:
            payload = payloads.infer_payload(name, meta["inputs"], {meta["inputs"][0]["name"]: shape},
                                             meta["outputs"], encoding)
            target = f"grpc://127.0.0.1:{grpc_port}" if encoding == "grpc" else server.url
            for level in levels:
                step = asyncio.run(loadgen.closed_loop(target, payload, level, args.warmup, args.duration))
                row = step.row()
                lines.append(f"| {encoding} | {level} | {step.throughput:.1f} | {step.throughput / raw:.2f} | "
                             f"{row['p50_ms']} | {row['p99_ms']} | {row['errors']} |")
                print(lines[-1], flush=True)
        lines.append("")
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "protocols.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
