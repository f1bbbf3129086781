"""Server settings: one dataclass filled from CLI flags, which also read `KAKEHASHI_<FLAG>` env vars."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


def default_model_path() -> Path:
    """The bundled repository holding the default person detector."""
    return Path(str(resources.files("kakehashi") / "assets" / "models"))


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 8001  # 0: no gRPC
    max_body_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 64_000_000
    compute_threads: int = max(2, os.cpu_count() or 2)
    log_level: str = "info"
    grace_seconds: float = 30.0
    poll_repository_seconds: float = 0.0  # 0: pick up changes on disk only through the load API
