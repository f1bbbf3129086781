"""Where a stream's frames come from: a URL or path read as PyAV opens it, and whether it is a video file (which
can be paced, looped, or read as fast as its frames are taken) or a live source."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    """What to open: location and format for av.open, and how to name it in messages."""

    location: str
    format: str | None
    options: dict[str, str]
    where: str  # host:port or path
    is_file: bool


def locate(url: str, options: dict[str, str] | None = None) -> Location:
    """`url` as PyAV opens it: `rtsp://` over TCP unless `options` say otherwise, `file://` and plain paths as
    files, `/dev/video*` as a v4l2 device, any other `scheme://` as whatever FFmpeg reads (live)."""
    given = dict(options or {})
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in DEFAULT_PORTS:
        where = f"{parts.hostname}:{parts.port or DEFAULT_PORTS[scheme]}"
        defaults = {"rtsp_transport": "tcp"} if scheme.startswith("rtsp") else {}
        return Location(url, None, defaults | given, where, is_file=False)
    if scheme == "file":
        path = unquote(parts.path)
        return Location(path, None, given, path, is_file=True)
    if url.startswith("/dev/video"):
        return Location(url, "v4l2", given, url, is_file=False)
    if scheme and "://" in url:  # rtmp, srt, udp...: whatever ffmpeg reads
        return Location(url, None, given, parts.hostname or url, is_file=False)
    return Location(url, None, given, url, is_file=True)
