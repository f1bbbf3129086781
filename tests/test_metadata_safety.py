"""Model files are data, never code: Ultralytics' Python-literal metadata is parsed with a literal parser, so
a model carrying code, absurd nesting or a huge value loads as data (or is ignored), and nothing runs."""

from __future__ import annotations

import numpy as np
import pytest

from inprocess import load
from onnx_builders import constant_model


def _model(path, names: str):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = (0, 0, 10, 10, 0.9, 1)
    return constant_model(
        path / "model.onnx", {"output0": rows}, metadata={"end2end": "True", "stride": "32", "names": names}
    )


def test_code_in_metadata_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"{{0: __import__('pathlib').Path('{marker}').touch()}}",
        f"[(lambda: open('{marker}', 'w'))()]",
    ]
    for index, payload in enumerate(payloads):
        handle = load(_model(tmp_path / str(index), payload))
        assert handle.ready and handle.task.names == ()  # ignored as names, never evaluated
    assert not marker.exists()


@pytest.mark.parametrize(
    "names, expected",
    [
        ("{0: 'cat', 1: 'dog'}", ("cat", "dog")),
        ("['cat', 'dog']", ("cat", "dog")),
        ("{1: 'dog', 0: 'cat', 3: 'eel'}", ("cat", "dog", "2", "eel")),  # a gap keeps indices aligned
        ("{'a': 'cat', 1: 'dog'}", ()),  # keys that are not class indices: ignored
        ("[" * 5000 + "]" * 5000, ()),  # too deeply nested for the parser
        ("'" + "x" * 2_000_000 + "'", ()),  # too long to parse
        ("{-1: 'x'}", ()),
    ],
)
def test_odd_names_load_as_data(tmp_path, names, expected):
    handle = load(_model(tmp_path, names))
    assert handle.ready and handle.task.names == expected
