"""The interface every inference runtime implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: OIP datatype and shape, with -1 for a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Backend(Protocol):
    """A loaded model that runs feeds to outputs; `run` is thread-safe and blocking."""

    platform: str
    providers: list[str]  # what runs it, best first (e.g. ONNX Runtime's execution providers)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    concurrent_runs: int  # runs it takes at once to keep its cores busy (`run` is thread-safe)
    # True: it spreads one run over every core, and runs only what would otherwise run alone (the instances after
    # it serve a queue side by side); listed first
    solo: bool

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every output by name."""
        ...

    def release_memory(self, one_row: dict[str, np.ndarray] | None) -> None:
        """Give back the scratch memory runs keep for reuse (the next run allocates what it needs again); safe while
        other runs go on (it may wait for them to end). `one_row`: zeros for a batch of one (None when the input
        shapes are not fixed)."""
        ...
