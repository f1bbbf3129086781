"""Zone, line and rule configuration (pydantic: unknown keys are errors), and the rules that turn a frame into
events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from kakehashi.events.event import Event
from kakehashi.streams.zones import Anchor, Crossing, ZoneState

Name = Annotated[str, Field(min_length=1)]
Coordinates = tuple[FiniteFloat, FiniteFloat]
Classes = Annotated[list[Name], Field(min_length=1)] | None


class ConfigModel(BaseModel):
    """A configuration mapping: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ZoneConfig(ConfigModel):
    """A polygon zone: `points` [[x, y], ...] in source pixels, at least 3."""

    name: Name
    points: list[Coordinates]
    anchor: Anchor = "bottom_center"

    @field_validator("points")
    @classmethod
    def _polygon(cls, points: list[Coordinates]) -> list[Coordinates]:
        if len(points) < 3:
            raise ValueError(f"a zone's polygon needs at least 3 points, got {len(points)}")
        return points


class LineConfig(ConfigModel):
    """A counting line from `start` [x, y] to `end` [x, y]; "in" is crossing from its left to its right (y down);
    `margin`: pixels on either side where a track's side is not decided (jitter on the line counts nothing)."""

    name: Name
    start: Coordinates
    end: Coordinates
    anchor: Anchor = "bottom_center"
    margin: Annotated[FiniteFloat, Field(ge=0.0)] = 5.0

    @model_validator(mode="after")
    def _segment(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError("a line's start and end must differ")
        return self


class PresenceRule(ConfigModel):
    """An event for a track once it has matched (class among `classes`, confidence ≥ `min_confidence`, inside `zone`)
    on `frames` consecutive frames; for the same track again only `cooldown_seconds` later, after matching again."""

    kind: Literal["presence"]
    name: Name
    classes: Classes = None
    min_confidence: Annotated[FiniteFloat, Field(ge=0.0, le=1.0)] = 0.5
    zone: Name | None = None
    frames: Annotated[int, Field(ge=1)] = 1
    cooldown_seconds: Annotated[FiniteFloat, Field(ge=0.0)] = 10.0


class CountRule(ConfigModel):
    """An event when the counts by class inside `zone` change and the new counts hold for `frames` consecutive
    frames (a detection that flickers for fewer frames changes nothing). With `prices` {class: price}, only priced
    classes count (all of `classes` must be priced) and the event carries the running total Σ count × price."""

    kind: Literal["count"]
    name: Name
    zone: Name
    classes: Classes = None
    prices: dict[Name, Annotated[FiniteFloat, Field(ge=0.0)]] | None = None
    frames: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _priced(self) -> CountRule:
        if self.prices is not None and self.classes is not None:
            unpriced = [c for c in self.classes if c not in self.prices]
            if unpriced:
                raise ValueError(f"classes without a price: {', '.join(unpriced)}")
        return self


class LineRule(ConfigModel):
    """An event for each crossing of `line` in `direction` ("in", "out" or "any") by a detection of `classes`."""

    kind: Literal["line"]
    name: Name
    line: Name
    direction: Literal["in", "out", "any"] = "any"
    classes: Classes = None


RuleConfig = Annotated[PresenceRule | CountRule | LineRule, Field(discriminator="kind")]


@dataclass(frozen=True)
class FrameContext:
    """What the rules see of one frame: its detections (tracked), the zones' states and the lines' crossings."""

    stream: str
    frame: int
    frame_time: float
    detections: list[dict[str, Any]]
    zones: Mapping[str, ZoneState]
    crossings: Mapping[str, list[Crossing]]

    def event(
        self, rule: str, kind: str, track_id: int | None, detections: list[dict[str, Any]], data: dict[str, Any]
    ) -> Event:
        return Event(
            stream=self.stream,
            rule=rule,
            kind=kind,
            frame_time=self.frame_time,
            frame=self.frame,
            track_id=track_id,
            detections=detections,
            data=data,
        )


class Rule(Protocol):
    def evaluate(self, frame: FrameContext) -> list[Event]: ...


def _of_classes(detection: dict[str, Any], classes: list[str] | None) -> bool:
    return classes is None or detection["name"] in classes


class Presence:
    def __init__(self, config: PresenceRule) -> None:
        self.config = config
        self._streaks: dict[int, int] = {}  # track id -> consecutive frames matched, since the last event
        self._fired: dict[int, float] = {}  # track id -> frame time of its last event

    def evaluate(self, frame: FrameContext) -> list[Event]:
        config = self.config
        candidates = frame.detections if config.zone is None else frame.zones[config.zone].detections
        events = []
        streaks: dict[int, int] = {}
        for detection in candidates:
            track_id = detection.get("track_id")
            if (
                not isinstance(track_id, int)
                or not _of_classes(detection, config.classes)
                or detection["confidence"] < config.min_confidence
            ):
                continue
            streak = streaks[track_id] = self._streaks.get(track_id, 0) + 1
            last = self._fired.get(track_id)
            if streak >= config.frames and (last is None or frame.frame_time - last >= config.cooldown_seconds):
                self._fired[track_id] = frame.frame_time
                streaks[track_id] = 0
                data = {} if config.zone is None else {"zone": config.zone}
                events.append(frame.event(config.name, "presence", track_id, [detection], data))
        self._streaks = streaks
        self._fired = {
            k: t for k, t in self._fired.items() if k in streaks or frame.frame_time - t < config.cooldown_seconds
        }
        return events


class Count:
    def __init__(self, config: CountRule) -> None:
        self.config = config
        self._classes = config.classes or (None if config.prices is None else list(config.prices))
        self._counts: dict[str, int] = {}
        self._new: dict[str, int] | None = None  # counts that differ from the reported ones, and for how many frames
        self._held = 0

    def evaluate(self, frame: FrameContext) -> list[Event]:
        inside = [d for d in frame.zones[self.config.zone].detections if _of_classes(d, self._classes)]
        counts: dict[str, int] = {}
        for detection in inside:
            counts[detection["name"]] = counts.get(detection["name"], 0) + 1
        if counts == self._counts:
            self._new, self._held = None, 0
            return []
        self._held = self._held + 1 if counts == self._new else 1
        self._new = counts
        if self._held < self.config.frames:
            return []
        self._counts, self._new, self._held = counts, None, 0
        data: dict[str, Any] = {"zone": self.config.zone, "counts": counts, "count": len(inside)}
        if self.config.prices is not None:
            data["total"] = sum(n * self.config.prices[name] for name, n in counts.items())
        return [frame.event(self.config.name, "count", None, inside, data)]


class LineEvents:
    """Its `in_count` / `out_count`: crossings by its classes, whichever `direction` it reports."""

    def __init__(self, config: LineRule) -> None:
        self.config = config
        self.in_count = 0
        self.out_count = 0

    def evaluate(self, frame: FrameContext) -> list[Event]:
        events = []
        for crossing in frame.crossings[self.config.line]:
            if not _of_classes(crossing.detection, self.config.classes):
                continue
            if crossing.direction == "in":
                self.in_count += 1
            else:
                self.out_count += 1
            if self.config.direction in ("any", crossing.direction):
                data = {
                    "line": self.config.line,
                    "direction": crossing.direction,
                    "in_count": self.in_count,
                    "out_count": self.out_count,
                }
                events.append(frame.event(self.config.name, "line", crossing.track_id, [crossing.detection], data))
        return events


def build_rule(config: PresenceRule | CountRule | LineRule) -> Rule:
    if isinstance(config, PresenceRule):
        return Presence(config)
    if isinstance(config, CountRule):
        return Count(config)
    return LineEvents(config)
