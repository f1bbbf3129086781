"""A stream's per-frame analytics: tracking, then zones and lines, then rules raising events. Pure computation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

from kakehashi.events.event import Event
from kakehashi.streams.rules import (
    ConfigModel,
    CountRule,
    FrameContext,
    LineConfig,
    LineRule,
    PresenceRule,
    RuleConfig,
    ZoneConfig,
    build_rule,
)
from kakehashi.streams.tracking import ByteTracker
from kakehashi.streams.zones import LineCounter, PolygonZone


def _unique(what: str, names: list[str]) -> None:
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise ValueError(f"{what} names must be unique, repeated: {', '.join(repeated)}")


class AnalyticsConfig(ConfigModel):
    """`tracking`: give detections track ids (ByteTrack); lines, presence and line rules need it."""

    tracking: bool = True
    zones: list[ZoneConfig] = []
    lines: list[LineConfig] = []
    rules: list[RuleConfig] = []

    @model_validator(mode="after")
    def _references(self) -> AnalyticsConfig:
        _unique("zone", [z.name for z in self.zones])
        _unique("line", [line.name for line in self.lines])
        _unique("rule", [r.name for r in self.rules])
        zones, lines = {z.name for z in self.zones}, {line.name for line in self.lines}
        for rule in self.rules:
            if isinstance(rule, PresenceRule | CountRule) and rule.zone is not None and rule.zone not in zones:
                raise ValueError(f"rule {rule.name!r} names zone {rule.zone!r}, which is not among the zones")
            if isinstance(rule, LineRule) and rule.line not in lines:
                raise ValueError(f"rule {rule.name!r} names line {rule.line!r}, which is not among the lines")
            if not self.tracking and isinstance(rule, PresenceRule | LineRule):
                raise ValueError(f"rule {rule.name!r} ({rule.kind}) needs track ids: tracking must be on")
        if not self.tracking and self.lines:
            raise ValueError("counting lines need track ids: tracking must be on")
        return self


@dataclass(frozen=True)
class FrameAnalysis:
    """One frame: `detections` (with `track_id` when tracking; untracked detections are left out then),
    `zones` {name: {count, counts, tracks: {track_id (as text, a JSON key): dwell seconds}}}, `lines`
    {name: {in, out}} (running counts), and the rules' `events`."""

    detections: list[dict[str, Any]]
    zones: dict[str, dict[str, Any]]
    lines: dict[str, dict[str, int]]
    events: list[Event]


class Analytics:
    """The analytics of one stream; feed it every frame in order."""

    def __init__(self, stream_name: str, config: AnalyticsConfig) -> None:
        self.stream_name = stream_name
        self.config = config
        self._tracker = ByteTracker() if config.tracking else None
        self._zones = [PolygonZone(z.name, z.points, z.anchor) for z in config.zones]
        self._lines = [LineCounter(ln.name, ln.start, ln.end, ln.anchor, ln.margin) for ln in config.lines]
        self._rules = [build_rule(rule) for rule in config.rules]
        self._last_frame: int | None = None

    def update(self, frame: int, frame_time: float, detections: list[dict[str, Any]]) -> FrameAnalysis:
        """`frame`: the frame's number in the stream; `frame_time`: seconds since the epoch when it was read (the
        events' time, so their ids are stable); `detections`: as the predict endpoint gives them."""
        steps = 1 if self._last_frame is None else frame - self._last_frame  # more than 1 after dropped frames
        self._last_frame = frame
        tracked = self._tracker.update(detections, steps) if self._tracker else [dict(d) for d in detections]
        zones = {zone.name: zone.update(tracked, frame_time) for zone in self._zones}
        crossings = {line.name: line.update(tracked) for line in self._lines}
        context = FrameContext(self.stream_name, frame, frame_time, tracked, zones, crossings)
        events = [event for rule in self._rules for event in rule.evaluate(context)]
        return FrameAnalysis(
            detections=tracked,
            zones={
                name: {
                    "count": state.count,
                    "counts": state.counts,
                    "tracks": {str(track): seconds for track, seconds in state.dwell.items()},
                }
                for name, state in zones.items()
            },
            lines={line.name: {"in": line.in_count, "out": line.out_count} for line in self._lines},
            events=events,
        )
