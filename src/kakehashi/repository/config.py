"""`model.yaml`: every key optional, unknown keys and wrong values are load errors naming file and key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kakehashi.errors import ModelLoadError

TASKS = ("detect", "segment", "pose", "obb", "classify", "tensor")
HEADS = ("ultralytics", "end2end", "yolov5", "yolox", "tf-od")


@dataclass(frozen=True)
class InputConfig:
    """How an image becomes the model's input tensor; `None` means inferred from the model."""

    size: tuple[int, int] | None = None
    channels: str = "rgb"
    scale: float | None = None
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str | None = None
    pad_value: int = 114
    layout: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class Defaults:
    """Per-request parameter defaults for detection and classification."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    top_k: int = 5


@dataclass(frozen=True)
class BatchingConfig:
    """The dynamic batcher: a batch closes at `max_batch_size` rows or when the oldest waited the delay."""

    max_batch_size: int = 8
    preferred_batch_size: int | None = None  # None: measured at warm-up (the fastest rows/s on this machine)
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 256
    timeout_ms: float | None = None


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: the newest `latest`, a `specific` list, or `all`."""

    latest: int | None = 1
    specific: tuple[int, ...] | None = None
    all: bool = False

    def select(self, versions: list[int]) -> list[int]:
        """Return the versions (ascending) this policy serves out of those on disk."""
        ordered = sorted(versions)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


@dataclass(frozen=True)
class ModelConfig:
    """A model's configuration: what `model.yaml` says, defaults for the rest."""

    task: str | None = None
    head: str | None = None
    names: tuple[str, ...] | None = None
    input: InputConfig = field(default_factory=InputConfig)
    defaults: Defaults = field(default_factory=Defaults)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    instances: int = 1
    threads: int | None = None
    warmup: bool = True
    backend: str = "auto"  # auto | onnxruntime | openvino
    performance_hint: str = "latency"  # OpenVINO: latency | throughput
    precision: str = "f32"  # OpenVINO: f32 (the same answers as ONNX Runtime) | bf16 (faster where supported)
    providers: tuple[str, ...] | None = None  # ONNX Runtime, in order of preference (None: the server's)
    kpt_shape: tuple[int, int] | None = None  # pose: keypoints per object and values per keypoint (2 or 3)


class _Invalid(ValueError):
    """A value does not match; the message says what was expected."""


Check = Callable[[Any], Any]
Schema = dict[str, "Check | Schema"]


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise _Invalid("one of " + ", ".join(options))
        return value

    return check


def _number(low: float | None = None, high: float | None = None, integer: bool = False) -> Check:
    kind = "an integer" if integer else "a number"
    bounds = f" in [{low}, {high}]" if high is not None else (f" >= {low}" if low is not None else "")

    def check(value: Any) -> float | int:
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise _Invalid(kind + bounds)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Invalid(kind + bounds)
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false")
    return value


def _numbers(count: int, item: Check, what: str) -> Check:
    def check(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != count:
            raise _Invalid(f"a list of {count} {what}")
        return tuple(item(v) for v in value)

    return check


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    try:
        return _numbers(2, _number(1, 16384, integer=True), "positive integers")(value)
    except _Invalid:
        raise _Invalid("an integer or a list [height, width] of positive integers") from None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid("a list of strings")
    return tuple(value)


def _positive_ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid("a non-empty list of version numbers")
    return tuple(_number(1, integer=True)(v) for v in value)


_INPUT: Schema = {
    "size": _size,
    "channels": _choice("rgb", "bgr"),
    "scale": _number(0.0),
    "mean": _numbers(3, _number(), "numbers"),
    "std": _numbers(3, _number(1e-12), "positive numbers"),
    "resize": _choice("letterbox", "stretch", "crop"),
    "pad_value": _number(0, 255, integer=True),
    "layout": _choice("nchw", "nhwc"),
    "dtype": _choice("float32", "float16", "uint8"),
}
_DEFAULTS: Schema = {
    "conf": _number(0.0, 1.0),
    "iou": _number(0.0, 1.0),
    "max_det": _number(1, 10000, integer=True),
    "top_k": _number(1, 1000, integer=True),
}
_BATCHING: Schema = {
    "max_batch_size": _number(1, 1024, integer=True),
    "preferred_batch_size": _number(1, 1024, integer=True),
    "max_queue_delay_ms": _number(0.0, 60_000.0),
    "max_queue_size": _number(1, 1_000_000, integer=True),
    "timeout_ms": _number(1.0, 3_600_000.0),
}
_POLICY: Schema = {
    "latest": _number(1, integer=True),
    "specific": _positive_ints,
    "all": _boolean,
}


def _parse_keys(raw: Any, schema: Schema, path: Path, prefix: str = "") -> dict[str, Any]:
    if not isinstance(raw, dict):
        where = f"key '{prefix[:-1]}'" if prefix else "the top level"
        raise ModelLoadError(f"{path}: {where}: expected a mapping of keys, got {raw!r}")
    parsed = {}
    for key, value in raw.items():
        check = schema.get(key)
        if check is None:
            raise ModelLoadError(f"{path}: unknown key '{prefix}{key}' (known keys: {', '.join(schema)})")
        if isinstance(check, dict):
            parsed[key] = _parse_keys(value, check, path, f"{prefix}{key}.")
            continue
        try:
            parsed[key] = check(value)
        except _Invalid as exc:
            raise ModelLoadError(f"{path}: key '{prefix}{key}': expected {exc}, got {value!r}") from None
    return parsed


def _names(value: Any) -> tuple[str, ...] | str:
    """Class names as a list, a {index: name} mapping, or a path to a file (resolved by the loader)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if sorted(value) != list(range(len(value))):
            raise _Invalid("a list of names, a mapping with keys 0..n-1, or a file path")
        return tuple(str(value[i]) for i in range(len(value)))
    return _strings(value)


def _providers(value: Any) -> tuple[str, ...]:
    """ONNX Runtime execution providers by short name (`cuda`) or full name (`CUDAExecutionProvider`)."""
    from kakehashi.backends.onnxruntime import provider_name

    names = _strings(value)
    try:
        return tuple(provider_name(name) for name in names)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _kpt_shape(value: Any) -> tuple[int, int]:
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and value[0] > 0
        and value[1] in (2, 3)
    ):
        raise _Invalid("[keypoints, 2 or 3] (e.g. [17, 3])")
    return int(value[0]), int(value[1])


def _read_names_file(path: Path, relative: str) -> tuple[str, ...]:
    names_file = path.parent / relative
    if not names_file.is_file():
        raise ModelLoadError(f"{path}: key 'names': names file {names_file} does not exist")
    return tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())


_TOP: Schema = {
    "task": _choice(*TASKS),
    "head": _choice(*HEADS),
    "names": _names,
    "input": _INPUT,
    "defaults": _DEFAULTS,
    "version_policy": _POLICY,
    "batching": _BATCHING,
    "instances": _number(1, 64, integer=True),
    "threads": _number(1, 1024, integer=True),
    "warmup": _boolean,
    "backend": _choice("auto", "onnxruntime", "openvino"),
    "performance_hint": _choice("latency", "throughput"),
    "precision": _choice("f32", "bf16"),
    "providers": _providers,
    "kpt_shape": _kpt_shape,
}


def load_model_config(path: Path) -> ModelConfig:
    """Parse `model.yaml` at `path`; a missing file gives the all-default configuration."""
    if not path.is_file():
        return ModelConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path}: not valid YAML: {exc}") from None
    parsed = _parse_keys(raw, _TOP, path)
    if isinstance(parsed.get("names"), str):
        parsed["names"] = _read_names_file(path, parsed["names"])
    policy = parsed.pop("version_policy", {})
    if len(policy) > 1:
        raise ModelLoadError(f"{path}: key 'version_policy': expected one of latest, specific or all")
    if policy.get("all") is False:
        policy = {}
    return ModelConfig(
        **parsed
        | {
            "input": InputConfig(**parsed.get("input", {})),
            "defaults": Defaults(**parsed.get("defaults", {})),
            "batching": BatchingConfig(**parsed.get("batching", {})),
            "version_policy": VersionPolicy(**({"latest": None} | policy) if policy else {}),
        }
    )


@dataclass(frozen=True)
class ServerDefaults:
    """What the server decides for every model (`serve --backend/--providers/--edge`) where `model.yaml` is silent."""

    backend: str = "auto"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    edge: bool = False

    def apply(self, config: ModelConfig) -> ModelConfig:
        config = replace(
            config,
            backend=self.backend if config.backend == "auto" else config.backend,
            providers=config.providers or self.providers,
        )
        return edge_profile(config) if self.edge else config


def edge_profile(config: ModelConfig) -> ModelConfig:
    """A model's configuration for a small device (`serve --edge`): one ONNX Runtime instance, no batching (so no
    batch buffers and no waiting), whatever else `model.yaml` says."""
    batching = replace(config.batching, max_batch_size=1, preferred_batch_size=1, max_queue_delay_ms=0.0)
    return replace(config, batching=batching, instances=1, backend="onnxruntime")
