"""Zones, counting lines, rules and their configuration, on detections placed by hand (expected values follow from
the geometry and timing of each scenario)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kakehashi.streams.analytics import Analytics, AnalyticsConfig
from kakehashi.streams.zones import LineCounter, PolygonZone, inside_polygon


def detection(
    x: float, bottom: float, track_id: int | None = None, name: str = "person", confidence: float = 0.9
) -> dict[str, Any]:
    """A 20 x 40 box whose bottom centre (the default anchor) is (x, bottom)."""
    out: dict[str, Any] = {
        "class": 0,
        "name": name,
        "confidence": confidence,
        "box": {"x1": x - 10, "y1": bottom - 40, "x2": x + 10, "y2": bottom},
    }
    if track_id is not None:
        out["track_id"] = track_id
    return out


# a horizontal line from (0, 100) to (200, 100), drawn left to right: "in" is moving down the image
def line() -> LineCounter:
    return LineCounter("door", (0, 100), (200, 100), margin=5)


def test_walking_down_across_a_line_counts_one_in_at_the_first_point_past_the_margin() -> None:
    counter = line()
    crossings_by_frame = [counter.update([detection(100, y, track_id=1)]) for y in range(40, 164, 4)]
    crossed = [i for i, crossings in enumerate(crossings_by_frame) if crossings]
    # feet at 40, 44, ...: the first beyond 100 + margin 5 is 108, the 18th point (index 17)
    assert crossed == [17]
    (crossing,) = crossings_by_frame[17]
    assert (crossing.track_id, crossing.direction, crossing.detection["box"]["y2"]) == (1, "in", 108)
    assert (counter.in_count, counter.out_count) == (1, 0)


def test_jitter_on_the_line_counts_once() -> None:
    counter = line()
    # feet wander within 5 px of the line (both sides of it) before and after the real crossing
    path = [80, 90, 98, 101, 99, 102, 97, 103, 96, 110, 104, 99, 102, 98, 112, 120]
    crossings = [c for y in path for c in counter.update([detection(100, y, track_id=1)])]
    assert [c.direction for c in crossings] == ["in"]
    assert (counter.in_count, counter.out_count) == (1, 0)


def test_walking_up_counts_out_and_passing_beside_the_segment_counts_nothing() -> None:
    counter = line()
    for y in range(160, 40, -10):
        counter.update([detection(150, y, track_id=1), detection(260, y, track_id=2)])  # x = 260: beyond the end
    assert (counter.in_count, counter.out_count) == (0, 1)


def test_untracked_and_first_seen_detections_count_nothing() -> None:
    counter = line()
    assert counter.update([detection(100, 150)]) == []  # no track id
    assert counter.update([detection(100, 150, track_id=5)]) == []  # first seen: no side to come from
    assert (counter.in_count, counter.out_count) == (0, 0)


# an L: the square (0, 0)-(100, 100) without its bottom-right quarter (40, 40)-(100, 100)
L_SHAPE = [(0, 0), (100, 0), (100, 40), (40, 40), (40, 100), (0, 100)]
# a dart pointing right, its notch on the left: at height y its inside runs from the edge (0, 0)-(40, 50), x = 0.8 y,
# to the edge (0, 0)-(100, 50), x = 2 y (for y <= 50)
DART = [(0, 0), (100, 50), (0, 100), (40, 50)]


@pytest.mark.parametrize(
    ("polygon", "point", "inside"),
    [
        (L_SHAPE, (20, 80), True),  # lower arm
        (L_SHAPE, (80, 20), True),  # upper arm
        (L_SHAPE, (20, 20), True),  # the corner where the arms meet
        (L_SHAPE, (80, 80), False),  # the notch: inside the bounding box, outside the L
        (L_SHAPE, (60, 60), False),
        (L_SHAPE, (150, 20), False),
        (L_SHAPE, (-5, 50), False),
        (DART, (60, 50), True),  # between the notch's tip (40) and the point (100)
        (DART, (80, 45), True),  # 36 < 80 < 90
        (DART, (95, 45), False),  # past the slanted edge at 90
        (DART, (30, 20), True),  # 16 < 30 < 40
        (DART, (10, 20), False),  # in the notch
        (DART, (20, 50), False),  # in the notch
    ],
)
def test_point_in_concave_polygon(polygon: list[tuple[float, float]], point: tuple[float, float], inside: bool) -> None:
    assert inside_polygon(point, polygon) is inside
    assert PolygonZone("p", polygon).contains(detection(*point)) is inside


def test_dwell_counts_from_entry_survives_a_missed_frame_and_resets_on_leaving() -> None:
    zone = PolygonZone("square", [(0, 0), (100, 0), (100, 100), (0, 100)], grace_seconds=1.0)
    outside, inside = detection(150, 50, track_id=1), detection(50, 50, track_id=1)
    other = detection(20, 20, track_id=2, name="dog")
    assert zone.update([outside], 10.0).dwell == {}
    first = zone.update([inside], 10.5)  # enters at 10.5
    assert (first.dwell, first.count, first.counts) == ({1: 0.0}, 1, {"person": 1})
    assert zone.update([inside, other], 11.0).dwell == {1: 0.5, 2: 0.0}
    assert zone.update([other], 11.5).dwell == {2: 0.5}  # track 1 missed on this frame: not counted
    state = zone.update([inside, other], 12.0)  # back within the grace period: still from 10.5
    assert (state.dwell, state.count, state.counts) == ({1: 1.5, 2: 1.0}, 2, {"person": 1, "dog": 1})
    zone.update([outside], 12.5)  # seen outside: left
    assert zone.update([inside], 13.0).dwell == {1: 0.0}


def presence_scenario() -> tuple[list[float], list[int]]:
    """A still person, one frame every 0.5 s, its confidence low (0.4, under min_confidence) on frame 1 and on
    frames 21-25: the expected events of a presence rule with frames=3, cooldown 10 s."""
    confidences = [0.9] * 56
    for low in [1, *range(21, 26)]:
        confidences[low] = 0.4
    # frames 2, 3, 4 are the first 3 consecutive (frame 1 broke the run from frame 0): event on frame 4, t = 2.0;
    # frames 21-25 break the run while the cooldown ends (t = 12.0); frames 26, 27, 28: event on frame 28, t = 14.0;
    # the person stays: the next event once the cooldown has run again, t = 24.0, frame 48
    return confidences, [4, 28, 48]


def test_presence_rule_fires_after_consecutive_frames_and_once_per_cooldown() -> None:
    confidences, expected_frames = presence_scenario()
    config = AnalyticsConfig.model_validate(
        {
            "zones": [{"name": "desk", "points": [[0, 0], [400, 0], [400, 400], [0, 400]]}],
            "rules": [
                {"kind": "presence", "name": "at desk", "classes": ["person"], "zone": "desk", "frames": 3},
                {"kind": "presence", "name": "every third", "frames": 3, "cooldown_seconds": 0},
            ],
        }
    )
    analytics = Analytics("cam1", config)
    events = []
    for frame, confidence in enumerate(confidences):
        analysis = analytics.update(frame, 1000.0 + frame * 0.5, [detection(200, 300, confidence=confidence)])
        assert [d["track_id"] for d in analysis.detections] == [1]  # the tracker keeps the low-score frames
        events += analysis.events
    by_rule = {rule: [e for e in events if e.rule == rule] for rule in ("at desk", "every third")}
    # no cooldown: each event restarts the count, so a run of satisfied frames fires on every third of its frames
    # (runs: frames 2-20 and 26-55)
    assert [e.frame for e in by_rule["every third"]] == [*range(4, 21, 3), *range(28, 56, 3)]
    events = by_rule["at desk"]
    assert [e.frame for e in events] == expected_frames
    assert [e.frame_time for e in events] == [1000.0 + f * 0.5 for f in expected_frames]
    assert {(e.rule, e.kind, e.track_id, e.stream) for e in events} == {("at desk", "presence", 1, "cam1")}
    assert all(e.detections[0]["box"]["y2"] == 300 and e.detections[0]["confidence"] == 0.9 for e in events)


def test_count_rule_with_prices_gives_the_running_total() -> None:
    config = AnalyticsConfig.model_validate(
        {
            "tracking": False,
            "zones": [{"name": "tray", "points": [[0, 0], [300, 0], [300, 300], [0, 300]]}],
            "rules": [{"kind": "count", "name": "till", "zone": "tray", "prices": {"apple": 1.2, "banana": 0.5}}],
        }
    )
    analytics = Analytics("checkout", config)
    apple, apple2 = detection(50, 100, name="apple"), detection(150, 100, name="apple")
    banana, banana_outside = detection(100, 200, name="banana"), detection(500, 200, name="banana")
    cup = detection(200, 250, name="cup")  # no price: not counted
    frames = [
        [apple, banana_outside],  # {apple: 1}: 1.2
        [apple, banana_outside],  # unchanged: no event
        [apple, apple2, banana],  # {apple: 2, banana: 1}: 2 x 1.2 + 0.5 = 2.9
        [apple2, banana],  # {apple: 1, banana: 1}: 1.7
        [apple2, banana, cup],  # unchanged for priced classes: no event
    ]
    events = [
        (frame, e) for frame, dets in enumerate(frames) for e in analytics.update(frame, 50.0 + frame, dets).events
    ]
    assert [frame for frame, _ in events] == [0, 2, 3]
    assert [e.data["counts"] for _, e in events] == [{"apple": 1}, {"apple": 2, "banana": 1}, {"apple": 1, "banana": 1}]
    assert [e.data["count"] for _, e in events] == [1, 3, 2]
    assert [e.data["total"] for _, e in events] == pytest.approx([1.2, 2.9, 1.7])
    assert all(e.track_id is None for _, e in events)
    assert [len(e.detections) for _, e in events] == [1, 3, 2]


def test_count_rule_with_frames_ignores_flicker_shorter_than_that() -> None:
    config = AnalyticsConfig.model_validate(
        {
            "tracking": False,
            "zones": [{"name": "tray", "points": [[0, 0], [300, 0], [300, 300], [0, 300]]}],
            "rules": [{"kind": "count", "name": "till", "zone": "tray", "prices": {"cup": 3.5}, "frames": 3}],
        }
    )
    analytics = Analytics("checkout", config)
    cup, cup2 = detection(50, 100, name="cup"), detection(150, 100, name="cup")
    # one cup; a second flickers in for 2 frames, a detection of the first is missed once; then the second stays
    frames = [[cup], [cup], [cup], [cup, cup2], [cup, cup2], [cup], [], [cup], [cup, cup2], [cup, cup2], [cup, cup2]]
    events = [
        (frame, e) for frame, dets in enumerate(frames) for e in analytics.update(frame, 10.0 + frame, dets).events
    ]
    assert [(frame, e.data["total"]) for frame, e in events] == [(2, 3.5), (10, 7.0)]


def test_line_rule_through_analytics_reports_crossings_in_its_direction() -> None:
    config = AnalyticsConfig.model_validate(
        {
            "lines": [{"name": "door", "start": [0, 200], "end": [400, 200]}],
            "rules": [{"kind": "line", "name": "entering", "line": "door", "direction": "in"}],
        }
    )
    analytics = Analytics("cam2", config)
    events, analysis = [], None
    for frame, y in enumerate([*range(100, 300, 10), *range(300, 100, -10)]):  # down across the line, then back up
        analysis = analytics.update(frame, float(frame), [detection(200, y)])
        events += analysis.events
    assert analysis is not None and analysis.lines == {"door": {"in": 1, "out": 1}}
    (event,) = events  # the way back up is "out": not this rule's direction
    # down from y = 100 in steps of 10, the first foot point past 200 + margin 5 is 210, frame 11
    assert (event.frame, event.track_id, event.kind) == (11, 1, "line")
    assert event.data == {"line": "door", "direction": "in", "in_count": 1, "out_count": 0}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": [{"kind": "count", "name": "r", "zone": "lobby"}]}, "zone 'lobby'"),
        ({"rules": [{"kind": "line", "name": "r", "line": "gate"}]}, "line 'gate'"),
        ({"zones": [{"name": "z", "points": [[0, 0], [10, 10]]}]}, "at least 3 points, got 2"),
        ({"zones": [{"name": "z", "points": [[0, 0], [1, 0], [0, 1]], "colour": "red"}]}, "Extra inputs"),
        ({"rules": [{"kind": "loiter", "name": "r"}]}, "'presence', 'count', 'line'"),
        ({"tracking": False, "rules": [{"kind": "presence", "name": "p"}]}, "tracking must be on"),
        (
            {"rules": [{"kind": "presence", "name": "p"}, {"kind": "presence", "name": "p"}]},
            "rule names must be unique, repeated: p",
        ),
    ],
)
def test_configuration_errors_name_the_problem(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnalyticsConfig.model_validate(config)
