"""The binary tensor data extension: raw little-endian tensor bytes after the JSON header.

BYTES elements are each a 4-byte little-endian length followed by that many bytes; BOOL is one byte each.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from kakehashi.datatypes import OIP_TO_NUMPY
from kakehashi.errors import InvalidInput


def split_body(body: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """The JSON header and the binary part of a body, from the `Inference-Header-Content-Length` value."""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the {len(body)}-byte body"
        )
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def _bytes_elements(name: str, raw: memoryview, count: int) -> np.ndarray:
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input '{name}': BYTES data ends inside an element's length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput(f"input '{name}': a BYTES element of {size} bytes runs past the data")
        values.append(bytes(raw[offset : offset + size]))
        offset += size
    if offset != len(raw):
        raise InvalidInput(f"input '{name}': {len(raw) - offset} bytes left over after {count} BYTES elements")
    array = np.empty(count, dtype=object)
    array[:] = values
    return array


def tensor_from_bytes(name: str, datatype: str, shape: tuple[int, ...], raw: memoryview) -> np.ndarray:
    """An input tensor from its raw bytes, checked against the element count of `shape`."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(shape)
    dtype = OIP_TO_NUMPY[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size gives {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_to_bytes(array: np.ndarray) -> bytes:
    """An output tensor's raw bytes (little-endian; BYTES length-prefixed)."""
    if array.dtype.kind in "OSU":
        parts = []
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
