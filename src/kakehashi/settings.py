"""Server settings: dataclasses filled from CLI flags, which also read `KAKEHASHI_<FLAG>` env vars."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal


def default_model_path() -> Path:
    """The bundled repository holding the default person detector."""
    return Path(str(resources.files("kakehashi") / "assets" / "models"))


def coco_model_path() -> Path:
    """The bundled COCO detector (YOLOX-Nano, 80 classes): a model folder, for streams and the worked examples."""
    return Path(str(resources.files("kakehashi") / "assets" / "coco" / "yolox-nano-coco"))


def bundled_models() -> dict[str, Path]:
    """The models shipped in the package by name: what `serve NAME` takes where no file or folder has that name."""
    return {"ssdlite-person": default_model_path() / "ssdlite-person", "yolox-nano-coco": coco_model_path()}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a model; the defaults protect a server, every one is configurable."""

    max_pixels: int = 64_000_000  # width x height of one image, checked before it is decoded (413)
    max_images: int = 64  # images in one predict request (413)
    max_tensor_elements: int = 64_000_000  # elements in one input tensor (413)
    request_timeout_ms: float = 60_000  # a request not answered by then gets 504 (0: no server-wide limit)
    max_queue_wait_ms: float = 0  # a request expected to wait longer for its turn gets 429 (0: no server-wide budget)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 8001  # 0: no gRPC
    max_body_bytes: int = 64 * 1024 * 1024  # HTTP body and gRPC message (413 / RESOURCE_EXHAUSTED)
    max_header_bytes: int = 64 * 1024  # HTTP request line + headers (431)
    header_timeout_seconds: float = 10.0  # request line + headers arrive within this, and idle keep-alive closes
    body_timeout_seconds: float = 60.0  # a whole request body arrives within this (408)
    max_connections: int = 1000  # HTTP connections served at once (more wait in the listen backlog)
    compute_threads: int = max(2, os.cpu_count() or 2)
    grace_seconds: float = 30.0  # on SIGTERM, how long accepted requests may take to finish
    # none: load/unload answer 403; explicit: through the API; poll: the API, and the repository scanned for changes
    model_control: Literal["none", "explicit", "poll"] = "none"
    poll_seconds: float = 10.0  # with model_control "poll": how often the repository is scanned for changes
    api_keys_file: Path | None = None  # keys also come from KAKEHASHI_API_KEYS
    admin_keys_file: Path | None = None  # keys for load/unload (and everything else); also KAKEHASHI_ADMIN_KEYS
    tls_cert: Path | None = None  # PEM certificate (chain) and key: HTTPS and gRPC over TLS
    tls_key: Path | None = None
    limits: Limits = field(default_factory=Limits)
    allow_local_streams: bool = False  # POST /v1/streams may name files and devices, not only network sources
