"""Issue 6's benchmark, in ONE run: `kakehashi batch` (in-process) against a plain in-process ONNX Runtime loop
doing the same decode, letterbox and post-processing on the same files — the runtime's limit for this job.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/batch_throughput.py --out benchmarks/results

A few hundred JPEGs are made from `../shared/images` (each photo at several sizes and crops); the plain loop
is timed at batch sizes 1, 2 and 4 and its best is the reference.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from throughput import SHARED, raw_limit

HERE = Path(__file__).parent
MODELS = ("yolo11n-coco-random-640-dynamic", "yolo26n-coco-random-640-e2e-dynamic")


def make_jpegs(source: Path, target: Path, count: int) -> list[Path]:
    """`count` JPEGs cut from the photos in `source`: different crops and sizes, so decoding varies."""
    target.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sorted(source.iterdir())]
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        scale = 0.6 + 0.4 * ((index // len(photos)) % 5) / 4
        width, height = photo.size
        crop = photo.crop((0, 0, max(64, int(width * scale)), max(64, int(height * scale))))
        paths.append(target / f"{index:04d}.jpg")
        crop.resize((max(64, int(crop.width * 1.5)), max(64, int(crop.height * 1.5)))).save(paths[-1], quality=90)
    return paths


def batch_rate(model: Path, folder: Path, out: Path) -> float:
    run = subprocess.run([sys.executable, "-m", "kakehashi", "batch", str(folder), "--model", str(model),
                          "--out", str(out), "--overwrite", "--quiet"], capture_output=True, text=True)
    match = re.search(r"\(([\d.]+) images/s\)", run.stderr)
    if run.returncode != 0 or not match:
        raise SystemExit(f"batch failed: {run.stderr}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-batch-"))
    files = make_jpegs(SHARED / "images", work / "jpeg", args.images)
    lines = [f"# Batch serving vs a plain ONNX Runtime loop ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} cores, one run, {len(files)} JPEGs)", "",
             "| model | plain loop, best batch (images/s) | kakehashi batch (images/s) | ratio |", "|---|---|---|---|"]
    for name in MODELS:
        model = SHARED / "models" / f"{name}.onnx"
        seconds = len(files) / 40  # about one pass over the files per batch size
        plain = {batch: raw_limit(model, files, batch, seconds) for batch in (1, 2, 4)}
        best = max(plain.values())
        ours = batch_rate(model, work / "jpeg", work / f"{name}.jsonl")
        lines.append(f"| {name} | {best:.1f} (batch {max(plain, key=plain.get)}; "
                     f"{', '.join(f'{b}: {v:.1f}' for b, v in plain.items())}) | {ours:.1f} | {ours / best:.2f} |")
        print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
