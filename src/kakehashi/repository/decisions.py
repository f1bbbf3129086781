"""What a model's load measured (the fastest runtime and precision, the batch size), kept on disk and reused by
the next load.

A decision is keyed by everything that could change it: the model file's bytes (and its INT8 copy's), its
configuration and calibration images, the threads it runs with, the runtimes' versions and the CPU. The folder is
`KAKEHASHI_CACHE_DIR` (empty: no cache), by default `$XDG_CACHE_HOME/kakehashi` (`~/.cache/kakehashi`). A missing,
unreadable or stale entry means measuring again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from kakehashi.backends.registry import RUNTIMES

log = logging.getLogger(__name__)

# bump when the meaning of a stored decision changes (4: runtimes timed with every run slot busy; 5: batch sizes too;
# 6: both beside other work; bump too when `measuring.beside_other_work` changes what it does)
FORMAT = 6


@dataclass(frozen=True)
class LoadDecisions:
    """What warm-up measured for one model on one machine."""

    runtime: str  # "onnxruntime" or "openvino": what serves the model
    precision: str  # f32, bf16, f16 or int8: what it computes in
    agreement: str  # how that precision's answers agreed with f32's ("" for f32)
    batch_size: int  # the preferred batch size (larger only where it pays 10% more rows per second)
    rows_follow_batch: bool  # outputs have one row per input row, so requests may be batched together


def cache_folder() -> Path | None:
    """Where decisions are kept, or None when caching is off (`KAKEHASHI_CACHE_DIR=`)."""
    configured = os.environ.get("KAKEHASHI_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kakehashi"


@cache
def _machine() -> str:
    """The CPU model and the cores this process may use: decisions measured elsewhere do not apply here."""
    name = platform.machine()  # not platform.processor(): it forks `uname -p`, unsafe beside gRPC's threads
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}/{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}"


@cache
def _runtime_versions() -> str:
    """The installed version of every registered runtime's package (named as the runtime)."""
    versions = []
    for package in RUNTIMES:
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}=none")
    return ",".join(versions)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as model:
        while chunk := model.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files_stamp(files: list[Path]) -> str:
    """The names, sizes and modification times of `files` (calibration images: cheaper than their bytes)."""
    return ",".join(f"{f.name}:{(s := f.stat()).st_size}:{s.st_mtime_ns}" for f in files)


def decision_key(model: Path, settings: str, related: list[Path]) -> str:
    """The key of `model`'s decisions under `settings` (its configuration and threads, as text) on this machine;
    `related` files (its INT8 copy, calibration images) count by name, size and time."""
    existing = [f for f in related if f.is_file()]
    parts = (str(FORMAT), _file_digest(model), settings, _files_stamp(existing), _runtime_versions(), _machine())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def recall(key: str) -> LoadDecisions | None:
    """The decisions stored under `key`, if any can be read."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        return LoadDecisions(**json.loads((folder / f"{key}.json").read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring the unreadable load decisions %s: %s", folder / f"{key}.json", exc)
        return None


def remember(key: str, decisions: LoadDecisions) -> None:
    """Store `decisions` under `key` (written whole, then renamed, so a reader never sees half of it); a folder
    that cannot be written is logged and skipped: the next load measures again."""
    folder = cache_folder()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as file:
            json.dump(asdict(decisions), file)
        os.replace(file.name, folder / f"{key}.json")
    except OSError as exc:
        log.warning("could not keep the load decisions in %s: %s", folder, exc)
