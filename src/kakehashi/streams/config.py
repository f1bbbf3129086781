"""What a stream is made of (a `streams:` entry of the server's config file, the body of `POST /v1/streams`, or
`serve --stream NAME=URL[,key=value...]`), and the server's config file itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from kakehashi.errors import InvalidInput
from kakehashi.events.config import EventsConfig, JsonlConfig
from kakehashi.streams.analytics import AnalyticsConfig
from kakehashi.streams.locations import locate

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "srt")
Parameter = StrictStr | StrictBool | StrictInt | StrictFloat


class StreamConfig(AnalyticsConfig):
    """One stream: its source, the served model that runs on its frames (with request parameters), and what
    follows: tracking, zones, lines and rules (`AnalyticsConfig`)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    model: str | None = None  # a served model's name; None: the only (or first) one served
    version: StrictInt | None = None
    fps: Annotated[float, Field(gt=0, le=240)] | None = None
    loop: StrictBool = False  # a video file starts again at its end
    # a video file played at its own frame rate like a camera (newest frame kept); false: read as fast as the model
    # takes its frames, none dropped (a recording analysed whole, the same frames every time)
    realtime: StrictBool = True
    params: dict[str, Parameter | list[Parameter]] = {}  # predict parameters: conf, iou, classes, max_det...
    snapshot: StrictBool = False  # events carry the annotated frame as JPEG
    max_in_flight: Annotated[int, Field(ge=1, le=8)] = 2  # frames of this stream in the model at once
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_failures: Annotated[int, Field(ge=1)] | None = None  # consecutive failed connections before FAILED

    @model_validator(mode="after")
    def _realtime_for_files_only(self) -> StreamConfig:
        if not self.realtime and not locate(self.url).is_file:
            raise ValueError(f"realtime: false is for video files; a live source ({self.redacted_url()}) cannot wait")
        return self

    def request_values(self) -> dict[str, list[str]]:
        """`params` as the data plane reads request parameters (a query string's values)."""
        values: dict[str, list[str]] = {}
        for key, value in self.params.items():
            items = value if isinstance(value, list) else [value]
            values[key] = [str(item).lower() if isinstance(item, bool) else str(item) for item in items]
        return values

    def is_network(self) -> bool:
        return urlsplit(self.url).scheme.lower() in NETWORK_SCHEMES

    def redacted_url(self) -> str:
        """The URL without a password."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    def public(self) -> dict[str, Any]:
        """The configuration as the API shows it (the URL's password hidden)."""
        return {**self.model_dump(mode="json"), "url": self.redacted_url()}


class ServerConfig(BaseModel):
    """`serve --config FILE`: streams to start with the server, and where their events go."""

    model_config = ConfigDict(extra="forbid")

    streams: list[StreamConfig] = []
    events: EventsConfig = Field(default_factory=lambda: EventsConfig.model_validate({}))

    @model_validator(mode="after")
    def _unique_names(self) -> ServerConfig:
        names = [stream.name for stream in self.streams]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"stream names must be unique; repeated: {', '.join(repeated)}")
        return self


def load_server_config(path: Path) -> ServerConfig:
    """The config file at `path` (YAML), or `InvalidInput` saying what is wrong and where. Relative paths in it (a
    stream's video file, the outbox, a JSONL sink) are relative to the file's folder."""
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: cannot be read as YAML: {exc}") from None
    try:
        config = ServerConfig.model_validate(content)
    except ValueError as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    return _relative_to(config, path.parent)


def _relative_to(config: ServerConfig, folder: Path) -> ServerConfig:
    streams = [
        stream if urlsplit(stream.url).scheme else stream.model_copy(update={"url": str(folder / stream.url)})
        for stream in config.streams
    ]
    events = config.events
    sinks = {
        name: sink.model_copy(update={"path": folder / sink.path}) if isinstance(sink, JsonlConfig) else sink
        for name, sink in events.sinks.items()
    }
    outbox = None if events.outbox is None else folder / events.outbox
    return config.model_copy(
        update={"streams": streams, "events": events.model_copy(update={"outbox": outbox, "sinks": sinks})}
    )


_FLAG = re.compile(r"^(?P<name>[^=,]+)=(?P<url>[^,]+)(?P<rest>(,[^=,]+=[^,]*)*)$")


def stream_from_flag(flag: str) -> StreamConfig:
    """`NAME=URL[,key=value...]` (`serve --stream`): keys are StreamConfig's scalar fields (model, fps, loop,
    snapshot...); anything else is a predict parameter (conf=0.5)."""
    match = _FLAG.match(flag)
    if match is None:
        raise InvalidInput(f"--stream {flag!r}: expected NAME=URL[,key=value...]")
    fields: dict[str, Any] = {"name": match["name"], "url": match["url"], "params": {}}
    scalars = {"model", "version", "fps", "loop", "realtime", "snapshot", "max_in_flight"}
    scalars |= {"reconnect_max_seconds", "max_failures"}
    for item in filter(None, match["rest"].split(",")):
        key, _, value = item.partition("=")
        if key in scalars:
            fields[key] = yaml.safe_load(value) if key not in ("model",) else value
        else:
            fields["params"][key] = value
    try:
        return StreamConfig.model_validate(fields)
    except ValueError as exc:
        raise InvalidInput(f"--stream {flag!r}: {exc}") from None
