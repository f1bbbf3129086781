"""Debian packages the tests run for real (Chromium, mosquitto, GStreamer's RTSP server): installed with apt-get the
first time a test needs them, so the README's test command works on a fresh machine (as root, where apt-get is)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable

CHROMIUM = ("chromium", "chromium-driver")
MOSQUITTO = ("mosquitto",)
RTSP_SERVER = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-libav",
)


def _installed(package: str) -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return status.returncode == 0 and status.stdout.endswith("installed")


@functools.cache
def _updated() -> None:
    subprocess.run(["apt-get", "update", "-q"], check=True, env=_ENV, capture_output=True)


_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def ensure(packages: tuple[str, ...], present: Callable[[], bool] = lambda: False) -> None:
    """Install whichever of `packages` is missing (nothing when `present()` says they are there already)."""
    if present():
        return
    missing = [package for package in packages if not _installed(package)]
    if not missing:
        return
    assert os.geteuid() == 0 and shutil.which("apt-get"), f"install Debian's {' '.join(missing)} (apt-get install)"
    _updated()
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=_ENV, capture_output=True)
