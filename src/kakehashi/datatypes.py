"""The Open Inference Protocol (KServe v2) datatypes and their numpy equivalents."""

import numpy as np

OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

NUMPY_TO_OIP: dict[np.dtype, str] = {dtype: name for name, dtype in OIP_TO_NUMPY.items()}
NUMPY_TO_OIP[np.dtype("S")] = "BYTES"
NUMPY_TO_OIP[np.dtype("U")] = "BYTES"


def oip_datatype(dtype: np.dtype) -> str:
    """OIP name of a numpy dtype (strings and bytes are BYTES)."""
    if dtype.kind in "SUO":
        return "BYTES"
    try:
        return NUMPY_TO_OIP[dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None
