"""Issue 8's INT8 numbers, in ONE run: `kakehashi quantize` on the bundled person detector and the YOLO graphs.

    .venv/bin/pip install -e '.[bench,quantize]'
    .venv/bin/python benchmarks/quantize.py --out benchmarks/results

Calibration: crops of `../shared/images` at three scales; held out (never calibrated): the same photos mirrored
and the test images mirrored. The YOLO models have random weights (scores near 1e-4 everywhere), so their
agreement line says little; their speed-up is real.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

from kakehashi.settings import default_model_path
from throughput import SHARED

HERE = Path(__file__).parent
MODELS = {"ssdlite-person (bundled, real weights)": (default_model_path() / "ssdlite-person", "0.25"),
          "yolo11n (random weights)": (SHARED / "models" / "yolo11n-coco-random-640-dynamic.onnx", "0.0001"),
          "yolo26n (random weights)": (SHARED / "models" / "yolo26n-coco-random-640-e2e-dynamic.onnx", "0.0001")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kakehashi-int8-"))
    calibration, held = work / "calibration", work / "held-out"
    calibration.mkdir()
    held.mkdir()
    photos = sorted(SHARED.joinpath("images").iterdir()) + sorted((HERE.parent / "tests" / "data" / "images").iterdir())
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        ImageOps.mirror(image).save(held / f"{photo.stem}.jpg", quality=92)
        for scale in (1.0, 0.8, 0.6):
            w, h = image.size
            image.crop((0, 0, int(w * scale), int(h * scale))).save(calibration / f"{photo.stem}-{scale}.jpg")
    lines = [f"# INT8 static quantization ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, one run)", "",
             f"{len(list(calibration.iterdir()))} calibration crops, {len(list(held.iterdir()))} held-out mirrored "
             f"photos; ONNX Runtime CPU, batch 1.", ""]
    for label, (source, conf) in MODELS.items():
        if source.is_dir():
            target = work / source.name
            shutil.copytree(source, target)
            model = target / "1" / "model.onnx"
        else:
            model = work / source.name
            shutil.copy(source, model)
        run = subprocess.run([sys.executable, "-m", "kakehashi", "quantize", str(model), "--calibration",
                              str(calibration), "--held-out", str(held), "--conf", conf],
                             capture_output=True, text=True)
        lines += [f"## {label}", "", "```", (run.stdout or run.stderr).strip(), "```", ""]
        print("\n".join(lines[-5:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantize.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
