"""Polygon zones (who is inside, for how long) and counting lines (who crossed, which way), on tracked detections.

A detection is placed by one point of its box, its anchor: `bottom_center` (where a person or vehicle touches the
ground, the default) or `center`. Coordinates are source pixels, y pointing down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Anchor = Literal["bottom_center", "center"]
Point = tuple[float, float]

FORGET_FRAMES = 300  # a line forgets the side of a track not seen for this many updates


def anchor_point(detection: dict[str, Any], anchor: Anchor) -> Point:
    box = detection["box"]
    x = (box["x1"] + box["x2"]) / 2
    y = box["y2"] if anchor == "bottom_center" else (box["y1"] + box["y2"]) / 2
    return float(x), float(y)


def inside_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule: a ray from `point` towards +x crosses the polygon's edges an odd number of times."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, [*polygon[1:], polygon[0]]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _track_id(detection: dict[str, Any]) -> int | None:
    track_id = detection.get("track_id")
    return track_id if isinstance(track_id, int) else None


@dataclass(frozen=True)
class ZoneState:
    """A zone on one frame: the detections inside, their number (`count`) and number per class name (`counts`),
    and `dwell`: for each tracked detection inside, seconds since its track entered."""

    detections: list[dict[str, Any]]
    count: int
    counts: dict[str, int]
    dwell: dict[int, float]

    @property
    def track_ids(self) -> set[int]:
        return set(self.dwell)


@dataclass
class _Stay:
    entered: float
    seen: float


class PolygonZone:
    """A polygon. A track enters when its anchor is first seen inside and leaves when seen outside; a track not seen
    at all (a missed detection) keeps its entry time for `grace_seconds`, so its dwell goes on if it comes back."""

    def __init__(
        self, name: str, points: Sequence[Point], anchor: Anchor = "bottom_center", grace_seconds: float = 1.0
    ) -> None:
        if len(points) < 3:
            raise ValueError(f"zone {name!r}: a polygon needs at least 3 points, got {len(points)}")
        self.name = name
        self.points = [(float(x), float(y)) for x, y in points]
        self.anchor: Anchor = anchor
        self.grace_seconds = grace_seconds
        self._stays: dict[int, _Stay] = {}

    def contains(self, detection: dict[str, Any]) -> bool:
        return inside_polygon(anchor_point(detection, self.anchor), self.points)

    def update(self, tracked: list[dict[str, Any]], frame_time: float) -> ZoneState:
        """One frame's detections (with `track_id` when tracked; untracked ones are counted, without dwell)."""
        inside = [d for d in tracked if self.contains(d)]
        seen = {_track_id(d) for d in tracked} - {None}
        dwell: dict[int, float] = {}
        for detection in inside:
            track_id = _track_id(detection)
            if track_id is not None:
                stay = self._stays.setdefault(track_id, _Stay(entered=frame_time, seen=frame_time))
                stay.seen = frame_time
                dwell[track_id] = frame_time - stay.entered
        self._stays = {
            track_id: stay
            for track_id, stay in self._stays.items()
            if track_id in dwell or (track_id not in seen and frame_time - stay.seen <= self.grace_seconds)
        }
        counts: dict[str, int] = {}
        for detection in inside:
            counts[detection["name"]] = counts.get(detection["name"], 0) + 1
        return ZoneState(detections=inside, count=len(inside), counts=counts, dwell=dwell)


@dataclass(frozen=True)
class Crossing:
    track_id: int
    direction: Literal["in", "out"]
    detection: dict[str, Any]


@dataclass
class _Side:
    side: int
    point: Point
    seen: int


class LineCounter:
    """A counting line from `start` to `end`. "in" is a crossing from the left of start→end to its right as seen on
    the image (y down): for a line drawn left to right, moving down the image; "out" the other way.

    A track's side is only taken where its anchor is farther than `margin` pixels from the line, so jitter on the
    line counts nothing; a crossing is counted when a track seen on one side is next seen on the other and its path
    between the two points meets the segment itself (not the line's extension)."""

    def __init__(
        self, name: str, start: Point, end: Point, anchor: Anchor = "bottom_center", margin: float = 5.0
    ) -> None:
        if start == end:
            raise ValueError(f"line {name!r}: start and end are the same point")
        self.name = name
        self.start = (float(start[0]), float(start[1]))
        self.end = (float(end[0]), float(end[1]))
        self.anchor: Anchor = anchor
        self.margin = margin
        self.in_count = 0
        self.out_count = 0
        self._sides: dict[int, _Side] = {}
        self._updates = 0

    def _cross(self, point: Point) -> float:
        """The z of (end - start) × (point - start): positive on the right of start→end (y down)."""
        (sx, sy), (ex, ey) = self.start, self.end
        return (ex - sx) * (point[1] - sy) - (ey - sy) * (point[0] - sx)

    def _meets_segment(self, a: Point, b: Point) -> bool:
        """Whether the path a→b, whose ends are on opposite sides of the line, meets it between start and end."""
        cross_a, cross_b = self._cross(a), self._cross(b)
        fraction = cross_a / (cross_a - cross_b)
        meet = (a[0] + (b[0] - a[0]) * fraction, a[1] + (b[1] - a[1]) * fraction)
        (sx, sy), (ex, ey) = self.start, self.end
        along = ((meet[0] - sx) * (ex - sx) + (meet[1] - sy) * (ey - sy)) / ((ex - sx) ** 2 + (ey - sy) ** 2)
        return 0.0 <= along <= 1.0

    def update(self, tracked: list[dict[str, Any]]) -> list[Crossing]:
        """One frame's tracked detections (untracked ones are ignored): the crossings made on this frame."""
        self._updates += 1
        length = ((self.end[0] - self.start[0]) ** 2 + (self.end[1] - self.start[1]) ** 2) ** 0.5
        crossings: list[Crossing] = []
        for detection in tracked:
            track_id = _track_id(detection)
            if track_id is None:
                continue
            point = anchor_point(detection, self.anchor)
            distance = self._cross(point) / length
            previous = self._sides.get(track_id)
            if abs(distance) <= self.margin:
                if previous is not None:
                    previous.seen = self._updates
                continue
            side = 1 if distance > 0 else -1
            if previous is not None and previous.side != side and self._meets_segment(previous.point, point):
                direction: Literal["in", "out"] = "in" if side > 0 else "out"
                if direction == "in":
                    self.in_count += 1
                else:
                    self.out_count += 1
                crossings.append(Crossing(track_id, direction, detection))
            self._sides[track_id] = _Side(side, point, self._updates)
        self._sides = {k: v for k, v in self._sides.items() if self._updates - v.seen < FORGET_FRAMES}
        return crossings
