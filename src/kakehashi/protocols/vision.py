"""The vision predict endpoint's wire format, shaped like Ultralytics Platform's predict API."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import orjson

from kakehashi.errors import InvalidInput
from kakehashi.repository.config import Defaults
from kakehashi.repository.handle import ImagePrediction
from kakehashi.tasks.params import PredictParams

PARAMETERS = ("conf", "iou", "imgsz", "max_det", "classes", "decimals", "top_k", "masks")
_TIMEOUT_MS_MAX = 3_600_000.0


def _number(name: str, low: float, high: float, integer: bool) -> Callable[[str], float | int]:
    kind = "an integer" if integer else "a number"

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise InvalidInput(f"parameter '{name}' must be {kind} between {low} and {high}, got {text!r}") from None
        if not low <= value <= high:
            raise InvalidInput(f"parameter '{name}' must be {kind} between {low} and {high}, got {text!r}")
        return value

    return parse


def _choice(name: str, *options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise InvalidInput(f"parameter '{name}' must be one of {', '.join(options)}, got {text!r}")
        return text

    return parse


def _integers(name: str, text: str, low: int, high: int) -> list[int]:
    """A list of integers written `1,2`, `1 2` or `[1, 2]`."""
    parts = [p for p in text.strip().strip("[]()").replace(",", " ").split() if p]
    parse = _number(name, low, high, integer=True)
    if not parts:
        raise InvalidInput(f"parameter '{name}' is empty")
    return [parse(p) for p in parts]  # type: ignore[misc]


_SCALARS = {
    "conf": _number("conf", 0.0, 1.0, integer=False),
    "iou": _number("iou", 0.0, 1.0, integer=False),
    "max_det": _number("max_det", 1, 10000, integer=True),
    "decimals": _number("decimals", 0, 10, integer=True),
    "top_k": _number("top_k", 1, 1000, integer=True),
    "masks": _choice("masks", "polygon", "rle"),
}


def parse_params(values: Mapping[str, Sequence[str]], defaults: Defaults) -> PredictParams:
    """Request parameters (query and form fields, each possibly repeated) over the model's defaults."""
    parsed: dict[str, object] = {
        "conf": defaults.conf,
        "iou": defaults.iou,
        "max_det": defaults.max_det,
        "top_k": defaults.top_k,
    }
    for name, texts in values.items():
        if name not in PARAMETERS or not texts:
            continue
        if name == "classes":
            parsed["classes"] = frozenset(v for text in texts for v in _integers(name, text, 0, 1_000_000))
        elif name == "imgsz":
            size = _integers(name, texts[-1], 32, 8192)
            if len(size) > 2:
                raise InvalidInput(f"parameter 'imgsz' must be one size or 'height,width', got {texts[-1]!r}")
            parsed["imgsz"] = (size[0], size[-1])
        else:
            parsed[name] = _SCALARS[name](texts[-1])
    return PredictParams(**parsed)  # type: ignore[arg-type]


def parse_timeout_ms(values: Mapping[str, Sequence[str]]) -> float | None:
    """The client's `timeout` parameter (milliseconds), if given."""
    texts = values.get("timeout")
    return _number("timeout", 1.0, _TIMEOUT_MS_MAX, integer=False)(texts[-1]) if texts else None


def image_answer(prediction: ImagePrediction) -> dict:
    """One image's object in the predict answer: `{shape, results, speed}`."""
    return {"shape": list(prediction.shape), "results": prediction.results, "speed": prediction.speed}


def encode_predictions(model: str, version: int, predictions: list[ImagePrediction]) -> bytes:
    """`{"images": [{shape, results, speed}], "metadata": {model, version, imageCount}}` as JSON bytes."""
    return orjson.dumps(
        {
            "images": [image_answer(p) for p in predictions],
            "metadata": {"model": model, "version": str(version), "imageCount": len(predictions)},
        }
    )
