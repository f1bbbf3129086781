"""OpenVINO imported once, made safe for a multi-threaded server.

- No usage telemetry: `import openvino` posts an event to Google Analytics from a forked process (a fork of a
  process running gRPC's and the runtimes' threads); with `openvino_telemetry` unimportable OpenVINO uses its stub.
- pybind11's NumPy bridge is initialised here, in one thread: the first `Tensor.data` of several threads at once
  can deadlock holding the GIL (seen with openvino 2026.4 when versions were measured side by side), which
  silences the whole server.

Python runs a module's body once, other importing threads waiting for it, so this import is the lock (for
Kakehashi's threads: code of the user's that touches `Tensor.data` before this import is not covered). With
this module imported first, OpenVINO's model converter and NNCF use their telemetry stubs in this process too.
"""

from __future__ import annotations

import sys

import numpy as np

sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: the import fails

import openvino as ov  # noqa: E402

ov.Tensor(np.zeros(1, np.float32)).data  # noqa: B018  # the NumPy bridge's one-time set-up

__all__ = ["ov"]
