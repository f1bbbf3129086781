"""`kakehashi export`: an Ultralytics checkpoint (`.pt`) to an ONNX model Kakehashi serves, through the optional
`export` extra (ultralytics, AGPL-3.0, with PyTorch). Only this command imports it; serving never does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kakehashi.errors import InvalidInput


def export(checkpoint: Path, out: Path | None, imgsz: int, half: bool) -> Path:
    """Export with a dynamic batch (and image size) dimension; Ultralytics writes its metadata (names, imgsz,
    stride, task, end2end…) into the ONNX file, which Kakehashi reads when serving."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or downloads from a serving machine
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    try:
        from ultralytics import YOLO
    except ImportError:
        raise InvalidInput(
            "export needs Ultralytics and PyTorch: pip install 'kakehashi[export]' (AGPL-3.0; "
            "on a CPU-only machine install a CPU build of torch and torchvision first)"
        ) from None
    try:
        model = YOLO(str(checkpoint))
        written = Path(
            model.export(
                format="onnx", dynamic=True, imgsz=imgsz, half=half, simplify=False, device="cpu", verbose=False
            )
        )
    except Exception as exc:  # Ultralytics raises many kinds for a bad or foreign checkpoint
        raise InvalidInput(f"{checkpoint}: Ultralytics could not export it: {str(exc).splitlines()[0]}") from None
    if out is not None and out.resolve() != written.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), out)
        written = out
    return written
