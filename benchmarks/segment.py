"""Issue 10's segmentation benchmark, in ONE run: YOLO11n-seg / YOLO26n-seg (random weights) served through the
image endpoint against a plain in-process ONNX Runtime loop doing the same decode, letterbox and
post-processing (masks included), and the share of each image's time spent building masks.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/segment.py --out benchmarks/results

Random weights put every score near 1e-4, so `conf=0.0001&max_det=20` makes 20 masks per image — a realistic
busy scene. The mask share compares post-processing with masks to the same detections without them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path


from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.bench import loadgen, payloads
from kakehashi.repository.config import ModelConfig
from kakehashi.tasks.detect import DetectTask
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task
from throughput import SHARED, Process, free_port, jpegs

HERE = Path(__file__).parent
MODELS = ("yolo11n-seg-random-640-dynamic", "yolo26n-seg-random-640-e2e-dynamic")
PARAMS = PredictParams(conf=0.0001, max_det=20)


def plain_loop(model: Path, images: list[Path], seconds: float) -> tuple[float, float]:
    """Images/s of decode + letterbox + ONNX Runtime + post-processing, and the mask share of the time."""
    backend = OnnxRuntimeBackend(model)
    task = resolve_task(backend, ModelConfig(), model)
    boxes_only = DetectTask(task.input, task.head, task.names)
    data = [p.read_bytes() for p in images]
    done, post_masks, post_boxes = 0, 0.0, 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        prepared = prepare_image(data[done % len(data)], task.input, PARAMS, 10**9)
        outputs = {k: v[0] for k, v in backend.run({task.input.name: prepared.tensor[None]}).items()}
        t0 = time.perf_counter()
        task.postprocess(outputs, prepared, PARAMS)
        t1 = time.perf_counter()
        boxes_only.postprocess(outputs, prepared, PARAMS)
        post_masks, post_boxes = post_masks + t1 - t0, post_boxes + time.perf_counter() - t1
        done += 1
    elapsed = time.perf_counter() - started - post_boxes  # the boxes-only pass is measurement, not work
    return done / elapsed, (post_masks - post_boxes) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-seg-"))
    images = jpegs(SHARED / "images", work / "jpeg")
    lines = [f"# Segmentation ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, one "
             f"run; 20 masks per image)", "",
             "| model | plain loop (images/s) | mask building share | server c=1 | c=4 | c=16 | server / plain (best) |",
             "|---|---|---|---|---|---|---|"]
    for name in MODELS:
        model = SHARED / "models" / f"{name}.onnx"
        rate, share = plain_loop(model, images, args.seconds)
        repo = work / name
        (repo / "m" / "1").mkdir(parents=True)
        (repo / "m" / "1" / "model.onnx").symlink_to(model)
        (repo / "m" / "model.yaml").write_text("backend: onnxruntime\n")
        port = free_port()
        server = Process([sys.executable, "-m", "kakehashi", "serve", str(repo), "--port", str(port),
                          "--grpc-port", "0"], f"http://127.0.0.1:{port}")
        server.ready()
        payload = payloads.predict_payload("m", images, "conf=0.0001&max_det=20")
        steps = [asyncio.run(loadgen.closed_loop(server.url, payload, c, 2.0, args.seconds)) for c in (1, 4, 16)]
        server.stop()
        best = max(s.throughput for s in steps)
        lines.append(f"| {name} | {rate:.1f} | {share:.1%} | " + " | ".join(f"{s.throughput:.1f}" for s in steps)
                     + f" | {best / rate:.2f} |")
        print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "segment.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
