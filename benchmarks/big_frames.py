"""Issue 16 point 5's benchmark, in ONE run: the rate for a 12 MP camera JPEG against an 810×1080 JPEG, with the
JPEG decoded at full size (the "before": PIL's `JpegImageFile.draft` patched to do nothing, in this process and
in the server) and at a reduced DCT scale (the "after").

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/big_frames.py --out benchmarks/results

Both images are `../shared/images/astronaut.png` resized to 3:4 portrait (bicubic) with a light sensor-like grain
(σ = 3), saved at quality 90: the grain gives the 12 MP file a camera-like size (1.6 MB, against 1 MB without it),
and decoding cost grows with the file. Model: YOLO11n (random weights, 640×640 input). Measured: decode +
letterbox alone and a plain in-process loop (decode, letterbox, ONNX Runtime, post-processing), one image at a
time, the four cases (full/reduced × 810×1080/12 MP) taking turns image by image; and `kakehashi serve`'s image
endpoint (two servers, full and reduced, raw JPEG bodies, closed loop) at concurrency 1 and 4, the four cases
taking turns in short windows, `--rounds` times. Taking turns keeps the machine's other load (it is shared) from
landing on one case.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin
from throughput import SHARED, Process, free_port

from kakehashi.backends.onnxruntime import OnnxRuntimeBackend
from kakehashi.bench import loadgen, payloads
from kakehashi.repository.config import ModelConfig
from kakehashi.tasks.image_task import prepare_image
from kakehashi.tasks.params import PredictParams
from kakehashi.tasks.resolve import resolve_task

HERE = Path(__file__).parent
MODEL = SHARED / "models" / "yolo11n-coco-random-640-dynamic.onnx"
SIZES = {"810×1080": (810, 1080), "12 MP (3000×4000)": (3000, 4000)}
MODES = {False: "full (before)", True: "reduced (after)"}
NO_DRAFT = "from PIL import JpegImagePlugin; JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None"
REDUCED_DRAFT = JpegImagePlugin.JpegImageFile.draft


def camera_jpeg(size: tuple[int, int], target: Path) -> Path:
    """`astronaut.png` resized to `size` with a light grain, saved as a quality-90 JPEG."""
    source = Image.open(SHARED / "images" / "astronaut.png").convert("RGB").resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(source, np.float32) + np.random.default_rng(0).normal(0, 3, (size[1], size[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=90)
    return target


def set_draft(enabled: bool) -> None:
    """Let PIL decode JPEGs at a reduced scale (its own `draft`), or patch that to do nothing."""
    JpegImagePlugin.JpegImageFile.draft = REDUCED_DRAFT if enabled else (lambda self, mode, size: None)  # type: ignore


def in_process(images: dict[str, Path], iterations: int) -> dict[tuple[bool, str], tuple[float, float]]:
    """Per case: decode + letterbox (ms per image), and images/s of a plain loop: that, ONNX Runtime,
    post-processing. The cases take turns image by image."""
    backend = OnnxRuntimeBackend(MODEL)
    task = resolve_task(backend, ModelConfig(), MODEL)
    data, params = {label: path.read_bytes() for label, path in images.items()}, PredictParams()
    prepare, total = defaultdict(list), defaultdict(list)
    for turn in range(iterations + 1):  # the first turn warms up
        for case in [(draft, label) for draft in MODES for label in images]:
            set_draft(case[0])
            started = time.perf_counter()
            prepared = prepare_image(data[case[1]], task.input, params, 10**9)
            ready = time.perf_counter()
            outputs = backend.run({task.input.name: prepared.tensor[None]})
            task.postprocess({k: v[0] for k, v in outputs.items()}, prepared, params)
            if turn:
                prepare[case].append(ready - started)
                total[case].append(time.perf_counter() - started)
    set_draft(True)
    return {case: (1000 * float(np.mean(prepare[case])), 1 / float(np.mean(total[case]))) for case in total}


def start_server(repo: Path, draft: bool) -> Process:
    port = free_port()
    boot = ["-m", "kakehashi"] if draft else ["-c", NO_DRAFT + "; from kakehashi.cli import main; main()"]
    return Process([sys.executable, *boot, "serve", str(repo), "--port", str(port), "--grpc-port", "0"],
                   f"http://127.0.0.1:{port}")


def served(repo: Path, images: dict[str, Path], rounds: int, seconds: float) -> dict[tuple[bool, str], list[float]]:
    """Per case: images/s through `kakehashi serve` at concurrency 1 and 4, the cases taking turns in windows of
    `seconds` (after 1 s of warm-up each), `rounds` times."""
    servers = {draft: start_server(repo, draft) for draft in MODES}
    for server in servers.values():
        server.ready(timeout=300)
    done: dict[tuple[bool, str, int], list[float]] = defaultdict(list)
    for _ in range(rounds):
        for concurrency in (1, 4):
            for draft, server in servers.items():
                for label, image in images.items():
                    payload = payloads.predict_payload("m", [image])
                    step = asyncio.run(loadgen.closed_loop(server.url, payload, concurrency, 1.0, seconds))
                    assert not step.errors, step.errors
                    done[draft, label, concurrency].append(step.throughput)
    for server in servers.values():
        server.stop()
    return {(d, label): [float(np.mean(done[d, label, c])) for c in (1, 4)] for d in MODES for label in images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--iterations", type=int, default=30, help="in-process images per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="one server window")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-big-"))
    images = {label: camera_jpeg(size, work / f"{size[0]}x{size[1]}.jpg") for label, size in SIZES.items()}
    (work / "repo" / "m" / "1").mkdir(parents=True)
    (work / "repo" / "m" / "1" / "model.onnx").symlink_to(MODEL)
    (work / "repo" / "m" / "model.yaml").write_text("backend: onnxruntime\n")
    local = in_process(images, args.iterations)
    remote = served(work / "repo", images, args.rounds, args.seconds)
    lines = [f"# Big camera frames ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
             "one run; YOLO11n 640×640)", "",
             "full (before): PIL's JPEG `draft` patched to do nothing, here and in the server, which is the decode "
             "before this change; reduced (after): the reduced DCT-scale decode (1/4 for the 12 MP image at 640; "
             "the 810×1080 one is under twice the input, so decoded in full either way). The cases take turns, "
             "so the machine's other load falls on all of them alike.", "",
             "| decode | image | JPEG size | decode + letterbox (ms) | in-process (images/s) | server c=1 | c=4 |",
             "|---|---|---|---|---|---|---|"]
    ratios = ["", "12 MP rate / 810×1080 rate:", "", "| decode | in-process | server c=1 | c=4 |", "|---|---|---|---|"]
    for draft, mode in MODES.items():
        rates = {}
        for label, image in images.items():
            prepare_ms, rate = local[draft, label]
            rates[label] = [rate, *remote[draft, label]]
            lines.append(f"| {mode} | {label} | {image.stat().st_size / 1e6:.2f} MB | {prepare_ms:.1f} | "
                         + " | ".join(f"{r:.2f}" for r in rates[label]) + " |")
        small, big = rates.values()
        ratios.append(f"| {mode} | " + " | ".join(f"{b / s:.2f}" for b, s in zip(big, small)) + " |")
    print("\n".join(lines + ratios))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "big_frames.md").write_text("\n".join(lines + ratios) + "\n")


if __name__ == "__main__":
    main()
