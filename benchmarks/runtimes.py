"""Issue 8's benchmark, in ONE run: ONNX Runtime against OpenVINO on this CPU, raw (in-process, batch 1/2/4) and
through the server's image endpoint (concurrency 1/4/16), for the YOLO models of `../shared/models` and the
bundled person detector; and whether they answer the same (boxes within 1 px, same classes).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/runtimes.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.backends.openvino import OpenVinoBackend
from kakehashi.bench import loadgen, payloads
from kakehashi.protocols.vision import parse_params
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, default_model_path
from throughput import SHARED, Process, free_port, jpegs

HERE = Path(__file__).parent
MODELS = {"yolo11n": SHARED / "models" / "yolo11n-coco-random-640-dynamic.onnx",
          "yolo26n": SHARED / "models" / "yolo26n-coco-random-640-e2e-dynamic.onnx",
          "ssdlite-person (bundled)": default_model_path() / "ssdlite-person" / "1" / "model.onnx"}


def raw_rate(backend, feeds: dict[str, np.ndarray], seconds: float) -> float:
    backend.run(feeds)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        backend.run(feeds)
        done += 1
    return done * next(iter(feeds.values())).shape[0] / (time.perf_counter() - started)


def predictions(model: Path, backend: str, images: list[bytes]) -> list[list[dict]]:
    """The detections of each image with one backend, through the same handle the server uses."""
    folder = Path(tempfile.mkdtemp()) / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to(model)
    (folder / "model.yaml").write_text(f"backend: {backend}\n" + _yaml(model))
    repository = ModelRepository(folder, ThreadPoolExecutor(2), Limits())
    repository.load_all()
    handle = repository.get("m")
    answers = asyncio.run(handle.predict(images, parse_params({"conf": ["0.05"]}, handle.config.defaults)))
    return [a.results for a in answers]


def _yaml(model: Path) -> str:
    """The model's own model.yaml (the bundled one sits one folder up from its version folder)."""
    found = [p for p in (model.parent / "model.yaml", model.parent.parent / "model.yaml") if p.exists()]
    return found[0].read_text() if found else ""


def raw_difference(model: Path, ort, ov, feeds: dict) -> float:
    """Largest absolute difference over every output element."""
    a, b = ort.run(feeds), ov.run(feeds)
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def agreement(a: list[list[dict]], b: list[list[dict]]) -> str:
    pairs = same = 0
    worst = 0.0
    for left, right in zip(a, b):
        for x, y in zip(left, right):
            pairs += 1
            shift = max(abs(x["box"][k] - y["box"][k]) for k in x["box"])
            worst = max(worst, shift)
            same += x["class"] == y["class"] and shift <= 1.0
    counts = [len(x) for x in a] == [len(y) for y in b]
    text = f"{same}/{pairs} detections match (class, box ≤ 1 px; worst shift {worst:.2f} px); same counts: {counts}"
    if not pairs:  # random weights: every anchor scores the same tiny value, so no detection passes conf 0.05
        text += " (random weights, nothing to compare here: the raw outputs above and tests/test_runtimes.py compare them)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-runtimes-"))
    images = jpegs(SHARED / "images", work / "jpeg")
    data = [p.read_bytes() for p in images]
    lines = [f"# ONNX Runtime vs OpenVINO ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} "
             f"cores, one run)", ""]
    for label, model in MODELS.items():
        ort = OnnxRuntimeBackend(model)
        ov = OpenVinoBackend(model, "latency", 1)
        ov_bf16 = OpenVinoBackend(model, "latency", 1, precision="bf16")
        spec = ort.inputs[0]
        shape = [d if d > 0 else 640 for d in spec.shape[1:]]
        dtype = np.uint8 if spec.datatype == "UINT8" else np.float32
        lines += [f"## {label}", "", "| batch | ONNX Runtime (images/s) | OpenVINO FP32 (images/s) | OpenVINO / ORT "
                  "| OpenVINO bf16 (images/s) | bf16 / ORT |", "|---|---|---|---|---|---|"]
        for batch in (1, 2, 4):
            pixels = np.random.default_rng(0).random([batch, *shape])  # what the server feeds: 0-1 floats
            feeds = {spec.name: (pixels * 255 if dtype == np.uint8 else pixels).astype(dtype)}
            a, b = raw_rate(ort, feeds, args.seconds), raw_rate(ov, feeds, args.seconds)
            c = raw_rate(ov_bf16, feeds, args.seconds)
            lines.append(f"| {batch} | {a:.1f} | {b:.1f} | {b / a:.2f} | {c:.1f} | {c / a:.2f} |")
            print(lines[-1], flush=True)
        one = {spec.name: feeds[spec.name][:1]}
        lines += ["", f"Largest difference from ONNX Runtime's raw outputs on the same input: OpenVINO FP32 "
                      f"{raw_difference(model, ort, ov, one):.3g}, bf16 {raw_difference(model, ort, ov_bf16, one):.3g}" + (
            " (an end-to-end head: with random weights every anchor scores the same, so which rows its top-k keeps is "
            "arbitrary in each runtime and the rows differ; the raw heads' outputs are compared in "
            "tests/test_runtimes.py)" if ort.outputs[0].shape[-1] == 6 else "")]
        del ort, ov, ov_bf16
        lines += ["", "Through the server (`POST /v1/models/m/predict`, JPEGs, closed loop):", "",
                  "| concurrency | ONNX Runtime (req/s) | OpenVINO (req/s) | OpenVINO / ORT | p50 ms ORT / OV |",
                  "|---|---|---|---|---|"]
        steps = {}
        for backend in ("onnxruntime", "openvino"):
            repo = work / f"{label.split()[0]}-{backend}"
            (repo / "m" / "1").mkdir(parents=True)
            (repo / "m" / "1" / "model.onnx").symlink_to(model)
            (repo / "m" / "model.yaml").write_text(_yaml(model))
            port = free_port()
            server = Process([sys.executable, "-m", "kakehashi", "serve", str(repo), "--port", str(port),
                              "--grpc-port", "0", "--backend", backend], f"http://127.0.0.1:{port}")
            server.ready()
            payload = payloads.predict_payload("m", images)
            steps[backend] = [asyncio.run(loadgen.closed_loop(server.url, payload, level, 2.0, args.seconds))
                              for level in (1, 4, 16)]
            server.stop()
        for a, b in zip(steps["onnxruntime"], steps["openvino"]):
            lines.append(f"| {a.level} | {a.throughput:.1f} | {b.throughput:.1f} | {b.throughput / a.throughput:.2f} "
                         f"| {a.percentile(50):.1f} / {b.percentile(50):.1f} |")
            print(lines[-1], flush=True)
        lines += ["", "Same answers (conf 0.05, through the handle): " + agreement(
            predictions(model, "onnxruntime", data), predictions(model, "openvino", data)), ""]
        print(lines[-2], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtimes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
