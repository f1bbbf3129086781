"""The job's durable record: one JSON line per input, appended as results complete.

Lines are flushed at once and fsync'ed at least every `SYNC_SECONDS` and at the end, so a crash or power cut
loses at most the last moments; a torn last line (a write cut short) is dropped when the job resumes, and the
inputs whose lines are complete are not done again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

SYNC_SECONDS = 1.0


def completed(path: Path) -> dict[str, bool]:
    """Key -> "it failed" for each complete line in `path`; a torn last line is cut off the file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    done = {}
    for line in data[:end].splitlines():
        if line.strip():
            record = orjson.loads(line)
            done[record["key"]] = "error" in record
    return done


class Journal:
    """Appends result lines to `path` durably (see the module's docstring)."""

    def __init__(self, path: Path, resume: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = completed(path) if resume else {}
        self._file = path.open("ab" if resume else "wb")
        self._synced = time.monotonic()

    def append(self, record: dict) -> None:
        self._file.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._file.flush()
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        self.sync()
        self._file.close()
