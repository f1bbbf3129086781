"""The inference runtimes Kakehashi knows: each runtime module registers itself once, and everything that offers or
picks a runtime (the `backend` key of `model.yaml`, `serve --backend`, the load) asks this registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kakehashi.backends.base import Backend
from kakehashi.errors import ModelLoadError

AUTO = "auto"  # not a runtime: measure the available ones at load and keep the fastest


@dataclass(frozen=True)
class RuntimeOptions:
    """What a model's configuration asks of its runtime, as plain values."""

    instances: int = 0  # sessions or infer requests (0: the runtime lays them out)
    threads: int = 0  # threads the configuration asked for (0: the runtime decides)
    threads_per_instance: int = 0  # threads for each of `instances` sessions (0: the runtime decides)
    runs_per_instance: int = 0  # ONNX Runtime: runs a session takes at once (0: two on a machine of several cores)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # ONNX Runtime's execution providers, best first
    performance_hint: str = "latency"  # OpenVINO: latency | throughput
    precision: str = "f32"  # the floating-point precision to compute in: f32 | bf16 | f16 (see `Runtime.precisions`)
    cache_folder: Path | None = None  # where a runtime may keep what it compiled, for the next load (None: nowhere)


@dataclass(frozen=True)
class Runtime:
    """One inference runtime: its name in `model.yaml`, the `platform` its backends report, how it makes a model's
    instances (one object per instance; it may be the same object), whether it is installed, and the floating-point
    precisions it computes in on this machine (int8 is a model file of its own: any runtime runs it)."""

    name: str
    platform: str
    create: Callable[[Path, RuntimeOptions], list[Backend]]
    available: Callable[[], bool] = lambda: True
    precisions: Callable[[], tuple[str, ...]] = lambda: ("f32",)


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> None:
    """Make `runtime` available by its name; a runtime module calls this once, when imported."""
    RUNTIMES[runtime.name] = runtime


def runtime_choices() -> tuple[str, ...]:
    """Every value `backend` may take: `auto`, then the registered runtimes."""
    return (AUTO, *RUNTIMES)


def runtime_named(name: str) -> Runtime:
    """The registered runtime called `name`."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ModelLoadError(f"unknown runtime '{name}' (known: {', '.join(RUNTIMES)})") from None


def runtime_of(backend: Backend) -> Runtime:
    """The registered runtime whose backends report `backend.platform`."""
    for runtime in RUNTIMES.values():
        if runtime.platform == backend.platform:
            return runtime
    raise ModelLoadError(f"no registered runtime serves platform '{backend.platform}'")
