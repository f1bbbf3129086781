"""What resolving a model's task reads from its configuration, described by shape so that tasks need not import
the repository layer (`repository.config.ModelConfig` has this shape)."""

from __future__ import annotations

from typing import Protocol


class InputSettings(Protocol):
    """How images become the model's input tensor; `None` means inferred from the model."""

    @property
    def size(self) -> tuple[int, int] | None: ...

    @property
    def channels(self) -> str: ...

    @property
    def scale(self) -> float | None: ...

    @property
    def mean(self) -> tuple[float, float, float]: ...

    @property
    def std(self) -> tuple[float, float, float]: ...

    @property
    def resize(self) -> str | None: ...

    @property
    def pad_value(self) -> int: ...

    @property
    def layout(self) -> str | None: ...

    @property
    def dtype(self) -> str | None: ...


class TaskSettings(Protocol):
    """What the configuration says of the task; `None` means inferred from the model."""

    @property
    def task(self) -> str | None: ...

    @property
    def head(self) -> str | None: ...

    @property
    def names(self) -> tuple[str, ...] | None: ...

    @property
    def kpt_shape(self) -> tuple[int, int] | None: ...

    @property
    def input(self) -> InputSettings: ...
