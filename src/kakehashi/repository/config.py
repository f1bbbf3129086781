"""`model.yaml`: every key optional, unknown keys and wrong values are load errors naming file and key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from kakehashi.backends.registry import AUTO, RuntimeOptions, runtime_choices
from kakehashi.repository.yaml_file import load_yaml_file
from kakehashi.tasks.registry import task_choices

HEADS = ("ultralytics", "end2end", "yolov5", "yolox", "tf-od")

_MAX_SIZE = 16384


def _expected(what: str) -> PydanticCustomError:
    """A validation error worded like pydantic's own ("Input should be …")."""
    return PydanticCustomError("expected", "Input should be " + what)


def _one_of(options: Callable[[], tuple[str, ...]]) -> AfterValidator:
    """A string among `options()`, asked when a value is checked (so options registered later count)."""

    def check(value: str) -> str:
        allowed = options()
        if value not in allowed:
            raise _expected("one of " + ", ".join(allowed))
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    """A mapping in `model.yaml`: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class InputConfig(_Section):
    """How an image becomes the model's input tensor; `None` means inferred from the model."""

    size: tuple[int, int] | None = None
    channels: Literal["rgb", "bgr"] = "rgb"
    scale: Annotated[StrictFloat, Field(ge=0.0)] | None = None
    mean: tuple[StrictFloat, StrictFloat, StrictFloat] = (0.0, 0.0, 0.0)
    std: tuple[
        Annotated[StrictFloat, Field(gt=0.0)],
        Annotated[StrictFloat, Field(gt=0.0)],
        Annotated[StrictFloat, Field(gt=0.0)],
    ] = (1.0, 1.0, 1.0)
    resize: Literal["letterbox", "stretch", "crop"] | None = None
    pad_value: Annotated[StrictInt, Field(ge=0, le=255)] = 114
    layout: Literal["nchw", "nhwc"] | None = None
    dtype: Literal["float32", "float16", "uint8"] | None = None

    @field_validator("size", mode="before")
    @classmethod
    def _square_or_pair(cls, value: Any) -> Any:
        """One integer for a square, or [height, width]."""
        if value is None:
            return None
        pair = [value, value] if isinstance(value, int) else value
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_SIZE for v in pair)
        ):
            raise _expected(f"an integer or a list [height, width] of integers in [1, {_MAX_SIZE}]")
        return tuple(pair)


class Defaults(_Section):
    """Per-request parameter defaults for detection and classification."""

    conf: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.25
    iou: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.7
    max_det: Annotated[StrictInt, Field(ge=1, le=10000)] = 300
    top_k: Annotated[StrictInt, Field(ge=1, le=1000)] = 5


class BatchingConfig(_Section):
    """The dynamic batcher: a batch closes at `max_batch_size` rows or when the oldest waited the delay."""

    max_batch_size: Annotated[StrictInt, Field(ge=1, le=1024)] = 8
    # None: measured at warm-up (the fastest rows/s on this machine)
    preferred_batch_size: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None
    max_queue_delay_ms: Annotated[StrictFloat, Field(ge=0.0, le=60_000.0)] = 0.0
    max_queue_size: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 256
    timeout_ms: Annotated[StrictFloat, Field(ge=1.0, le=3_600_000.0)] | None = None
    # refuse (429) a request whose expected wait for its turn is longer (None: only the queue size and deadline)
    max_queue_wait_ms: Annotated[StrictFloat, Field(ge=1.0, le=3_600_000.0)] | None = None


PRECISIONS = ("auto", "f32", "bf16", "f16", "int8")


class AgreementConfig(_Section):
    """What a precision other than f32 must keep of the model's f32 answers to serve (see `tasks.agreement`)."""

    # a folder of calibration images, relative to model.yaml (None: the images Kakehashi ships)
    images: StrictStr | None = None
    box_iou: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.9
    confidence: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.1
    output: Annotated[StrictFloat, Field(ge=0.0)] = 0.02  # raw tensors, relative to f32's largest magnitude

    @field_validator("images")
    @classmethod
    def _folder_beside_model_yaml(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        config_path = (info.context or {}).get("path")
        folder = Path(config_path).parent / value if config_path is not None else Path(value)
        if not folder.is_dir():
            raise PydanticCustomError(
                "images_folder", "calibration folder {folder} does not exist", {"folder": str(folder)}
            )
        return str(folder.resolve())


class VersionPolicy(_Section):
    """Which versions of a model are served: the newest `latest`, a `specific` list, or `all`."""

    latest: Annotated[StrictInt, Field(ge=1)] | None = 1
    specific: Annotated[tuple[Annotated[StrictInt, Field(ge=1)], ...], Field(min_length=1)] | None = None
    all: StrictBool = False

    def select(self, versions: list[int]) -> list[int]:
        """Return the versions (ascending) this policy serves out of those on disk."""
        ordered = sorted(versions)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


class ModelConfig(_Section):
    """A model's configuration: what `model.yaml` says, defaults for the rest."""

    task: Annotated[StrictStr, _one_of(task_choices)] | None = None  # a registered task or tensor
    head: Annotated[StrictStr, _one_of(lambda: HEADS)] | None = None
    names: tuple[StrictStr, ...] | None = None
    input: InputConfig = Field(default_factory=InputConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    # runtime instances (None: the runtime's layout; ONNX Runtime on the CPU: a session using every core for a request
    # alone, two sessions sharing the cores for a queue)
    instances: Annotated[StrictInt, Field(ge=1, le=64)] | None = None
    threads: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None
    # ONNX Runtime: runs each session takes at once (None: two where there are several cores, a second filling the
    # cores the first leaves idle; one on a single core)
    runs_per_instance: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    warmup: StrictBool = True
    backend: Annotated[StrictStr, _one_of(runtime_choices)] = AUTO  # auto or a registered runtime
    performance_hint: Literal["latency", "throughput"] = "latency"  # OpenVINO
    # auto: the fastest precision whose answers agree with f32's (`agreement`); or one of them, still checked
    precision: Annotated[StrictStr, _one_of(lambda: PRECISIONS)] = "auto"
    agreement: AgreementConfig = Field(default_factory=AgreementConfig)
    providers: tuple[str, ...] | None = None  # ONNX Runtime, in order of preference (None: the server's)
    # pose: keypoints per object and values per keypoint (2 or 3)
    kpt_shape: tuple[int, int] | None = None
    handler: StrictStr | None = None  # module:Class, your own pre- and post-processing (see kakehashi.handlers)

    def runtime_options(self, threads_per_instance: int) -> RuntimeOptions:
        """What this configuration asks of its runtime, in the backends' terms."""
        return RuntimeOptions(
            instances=self.instances or 0,
            threads=self.threads or 0,
            threads_per_instance=threads_per_instance,
            runs_per_instance=self.runs_per_instance or 0,
            providers=self.providers or RuntimeOptions.providers,
            performance_hint=self.performance_hint,
        )

    @field_validator("names", mode="before")
    @classmethod
    def _names_from_mapping_or_file(cls, value: Any, info: ValidationInfo) -> Any:
        """Class names as a list, a {index: name} mapping, or a path to a file relative to `model.yaml`."""
        if isinstance(value, dict):
            if set(value) != set(range(len(value))):
                raise _expected("a list of names, a mapping with keys 0..n-1, or a file path")
            return [str(value[i]) for i in range(len(value))]
        if isinstance(value, str):
            return _read_names_file(value, info)
        return value

    @field_validator("version_policy", mode="before")
    @classmethod
    def _one_policy(cls, value: Any) -> Any:
        """`model.yaml` names one policy; `specific` or `all` replaces the default `latest: 1`."""
        if not isinstance(value, dict):
            return value
        if len(value) > 1:
            raise _expected("one of latest, specific or all")
        if value.get("all") is False:
            return {}
        return {"latest": None} | value if "specific" in value or "all" in value else value

    @field_validator("providers", mode="before")
    @classmethod
    def _full_provider_names(cls, value: Any) -> Any:
        """ONNX Runtime execution providers by short name (`cuda`) or full name (`CUDAExecutionProvider`)."""
        from kakehashi.backends.onnxruntime import provider_name

        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise _expected("a list of strings")
        try:
            return tuple(provider_name(name) for name in value)
        except ValueError as exc:
            raise _expected(str(exc)) from None

    @field_validator("kpt_shape", mode="before")
    @classmethod
    def _keypoint_shape(cls, value: Any) -> Any:
        if value is not None and not (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and value[0] > 0
            and value[1] in (2, 3)
        ):
            raise _expected("[keypoints, 2 or 3] (e.g. [17, 3])")
        return value


def _read_names_file(relative: str, info: ValidationInfo) -> list[str]:
    """The non-empty lines of a names file beside the `model.yaml` being read."""
    config_path = (info.context or {}).get("path")
    if config_path is None:
        raise _expected("a list of names (a names file is read only from a model.yaml)")
    names_file = Path(config_path).parent / relative
    if not names_file.is_file():
        raise PydanticCustomError("names_file", "names file {file} does not exist", {"file": str(names_file)})
    return [line.strip() for line in names_file.read_text().splitlines() if line.strip()]


def load_model_config(path: Path) -> ModelConfig:
    """Parse `model.yaml` at `path`; a missing file gives the all-default configuration."""
    if not path.is_file():
        return ModelConfig()
    return load_yaml_file(path, ModelConfig)


@dataclass(frozen=True)
class ServerDefaults:
    """What the server decides for every model (`serve --backend/--precision/--providers/--edge`) where `model.yaml`
    is silent, and whether a first load measures after serving (the server) or before (one-off commands)."""

    backend: str = AUTO
    precision: str = "auto"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    edge: bool = False
    measure_in_background: bool = False

    @staticmethod
    def backend_choices() -> tuple[str, ...]:
        """What `serve --backend` may say: `auto` or a registered runtime."""
        return runtime_choices()

    def apply(self, config: ModelConfig) -> ModelConfig:
        config = config.model_copy(
            update={
                "backend": self.backend if config.backend == AUTO else config.backend,
                "precision": self.precision if config.precision == "auto" else config.precision,
                "providers": config.providers or self.providers,
            }
        )
        return edge_profile(config) if self.edge else config


def edge_profile(config: ModelConfig) -> ModelConfig:
    """A model's configuration for a small device (`serve --edge`): one ONNX Runtime instance running one inference
    at a time on every core (one set of activations), no batching (so no batch buffers and no waiting), whatever
    else `model.yaml` says."""
    batching = config.batching.model_copy(
        update={"max_batch_size": 1, "preferred_batch_size": 1, "max_queue_delay_ms": 0.0}
    )
    return config.model_copy(
        update={"batching": batching, "instances": 1, "runs_per_instance": 1, "backend": "onnxruntime"}
    )
