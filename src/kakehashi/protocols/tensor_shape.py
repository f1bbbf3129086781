"""The one check every transport applies to a request tensor's shape before any array is made from it."""

from __future__ import annotations

import math
from collections.abc import Iterable

from kakehashi.errors import InvalidInput

MAX_DIMENSIONS = 32  # numpy's limit too
MAX_DIMENSION = 2**31 - 1  # what ONNX Runtime and OpenVINO index with
# no real tensor has more elements than this, even where a zero dimension makes its size 0
MAX_ELEMENTS_IGNORING_ZEROS = 2**40


def checked_shape(name: str, dims: Iterable[object]) -> tuple[int, ...]:
    """`dims` as a shape, or `InvalidInput` if it is not a list of non-negative integers a tensor can have."""
    raw = list(dims)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers, got {raw!r}")
    shape = tuple(int(d) for d in raw)  # type: ignore[call-overload]  # every item was checked to be an int
    if (
        len(shape) > MAX_DIMENSIONS
        or any(d > MAX_DIMENSION for d in shape)
        or math.prod(d for d in shape if d) > MAX_ELEMENTS_IGNORING_ZEROS
    ):
        raise InvalidInput(
            f"input '{name}': shape {list(shape)[: MAX_DIMENSIONS + 1]} is impossible (at most "
            f"{MAX_DIMENSIONS} dimensions of at most {MAX_DIMENSION}, and at most "
            f"{MAX_ELEMENTS_IGNORING_ZEROS} elements)"
        )
    return shape
