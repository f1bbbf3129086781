"""What the load generator sends, and how it checks each answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import orjson

Check = Callable[[int, bytes], str | None]  # (status, body) → None if right, else what was wrong


@dataclass(frozen=True)
class Payload:
    """One kind of request: path, body, headers, and the check every answer must pass."""

    path: str
    bodies: list[bytes]
    headers: dict[str, str]
    check: Check
    description: str


IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".bmp": "image/bmp"}


def image_files(sources: list[Path]) -> list[Path]:
    """Image files from files and folders (recursively), sorted."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_TYPES)
        else:
            found.append(source)
    return found


def _check_predict(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}"
    try:
        answer = orjson.loads(body)
        images = answer["images"]
        if len(images) != 1 or not isinstance(images[0]["results"], list) or len(images[0]["shape"]) != 2:
            return "bad answer shape"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "bad answer"
    return None


def predict_payload(model: str, images: list[Path], query: str = "") -> Payload:
    """Raw image bodies for `POST /v1/models/{model}/predict`, cycling through `images`."""
    if not images:
        raise ValueError("no images to send")
    kinds = {IMAGE_TYPES.get(p.suffix.lower(), "application/octet-stream") for p in images}
    path = f"/v1/models/{model}/predict" + (f"?{query}" if query else "")
    headers = {"content-type": kinds.pop() if len(kinds) == 1 else "application/octet-stream"}
    return Payload(path, [p.read_bytes() for p in images], headers, _check_predict,
                   f"predict {model}: {len(images)} image(s)")


_NUMPY = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT8": np.int8,
          "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def infer_json_payload(model: str, inputs: list[dict], shapes: dict[str, list[int]], outputs: list[dict],
                       seed: int = 0) -> Payload:
    """An OIP v2 JSON infer request with random data for every input (shapes fill dynamic dimensions)."""
    rng = np.random.default_rng(seed)
    tensors = []
    for spec in inputs:
        shape = shapes.get(spec["name"]) or [1 if d == -1 else d for d in spec["shape"]]
        if any(d < 0 for d in shape):
            raise ValueError(f"input {spec['name']} has dynamic dimensions {spec['shape']}; give --shape")
        data = (rng.random(shape) * 255).astype(_NUMPY[spec["datatype"]])
        tensors.append({"name": spec["name"], "datatype": spec["datatype"], "shape": shape,
                        "data": data.reshape(-1).tolist()})
    expected = {o["name"] for o in outputs}

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        try:
            answer = orjson.loads(body)
            got = {o["name"]: o for o in answer["outputs"]}
            if set(got) != expected:
                return "wrong outputs"
            for output in got.values():
                if len(output["data"]) != int(np.prod(output["shape"])):
                    return "data does not match shape"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "bad answer"
        return None

    return Payload(f"/v2/models/{model}/infer", [orjson.dumps({"inputs": tensors})],
                   {"content-type": "application/json"}, check, f"infer {model} (JSON)")
