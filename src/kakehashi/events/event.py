"""An event: what a stream's rule saw on one frame, with an id that is the same on every delivery attempt."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any


def event_id(stream: str, rule: str, track_id: int | None, frame_time: float) -> str:
    """The stable id: the same stream, rule, track and frame time give the same id (sinks de-duplicate on it)."""
    key = f"{stream}\x1f{rule}\x1f{'' if track_id is None else track_id}\x1f{frame_time:.6f}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Event:
    """One event. `frame_time`: seconds since the epoch when the frame was read; `detections`: the detections
    involved, as the predict endpoint gives them (with `track_id`); `data`: what the rule adds (zone counts, line
    counts, a running total); `snapshot`: the annotated frame as JPEG, if the stream asks for one."""

    stream: str
    rule: str
    kind: str
    frame_time: float
    frame: int
    track_id: int | None = None
    detections: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    snapshot: bytes | None = None

    @property
    def id(self) -> str:
        return event_id(self.stream, self.rule, self.track_id, self.frame_time)

    def to_json(self) -> dict[str, Any]:
        """The event as sinks send it (the snapshot base64-encoded)."""
        body: dict[str, Any] = {
            "id": self.id,
            "stream": self.stream,
            "rule": self.rule,
            "kind": self.kind,
            "frame_time": self.frame_time,
            "frame": self.frame,
            "track_id": self.track_id,
            "detections": self.detections,
            "data": self.data,
        }
        if self.snapshot is not None:
            body["snapshot_jpeg"] = base64.b64encode(self.snapshot).decode()
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Event:
        snapshot = body.get("snapshot_jpeg")
        return cls(
            stream=body["stream"],
            rule=body["rule"],
            kind=body["kind"],
            frame_time=body["frame_time"],
            frame=body["frame"],
            track_id=body.get("track_id"),
            detections=body.get("detections", []),
            data=body.get("data", {}),
            snapshot=None if snapshot is None else base64.b64decode(snapshot),
        )
