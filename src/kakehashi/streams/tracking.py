"""Multi-object tracking with ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every
Detection Box", ECCV 2022).

Matching is class-aware: a track follows boxes of the class it started with, so where a person walks in front of a
table, neither takes the other's id. Ids are given when a track is confirmed, so the ids a caller sees run 1, 2, 3...
without gaps and are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_STD_POSITION = 1 / 20  # position noise, relative to the box height (as in ByteTrack / DeepSORT)
_STD_VELOCITY = 1 / 160  # velocity noise, relative to the box height
_LOW_MATCH_IOU = 0.5  # second association (low-score detections): ByteTrack's cost threshold 0.5
_UNCONFIRMED_MATCH_IOU = 0.3  # new tracks against the leftover high-score detections: cost threshold 0.7
_NO_MATCH = 1e6  # the cost of a pair under the IoU threshold, so the assignment never prefers it

_TRANSITION = np.eye(8)
_TRANSITION[:4, 4:] = np.eye(4)


def _box_of(detection: dict[str, Any]) -> np.ndarray:
    box = detection["box"]
    return np.array([box["x1"], box["y1"], box["x2"], box["y2"]], dtype=np.float64)


def _xyah(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) boxes (x1, y1, x2, y2) -> (centre x, centre y, width / height, height)."""
    width, height = boxes[..., 2] - boxes[..., 0], np.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    return np.stack([boxes[..., 0] + width / 2, boxes[..., 1] + height / 2, width / height, height], -1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (n, 4) with every box in `b` (m, 4), boxes as (x1, y1, x2, y2)."""
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class _Kalman:
    """Constant-velocity Kalman filter on (cx, cy, aspect, height) and their velocities; noise scales with height."""

    def __init__(self, box: np.ndarray) -> None:
        measurement = _xyah(box)
        self.mean = np.concatenate([measurement, np.zeros(4)])
        h = measurement[3]
        position, velocity = 2 * _STD_POSITION * h, 10 * _STD_VELOCITY * h
        std = np.array([position, position, 1e-2, position, velocity, velocity, 1e-5, velocity])
        self.covariance = np.diag(std**2)

    @staticmethod
    def predict(filters: list[_Kalman], lost: list[bool], steps: int) -> None:
        """Move every filter `steps` frames ahead, all at once (a lost track keeps its size, as ByteTrack does)."""
        if not filters:
            return
        means = np.stack([f.mean for f in filters])
        covariances = np.stack([f.covariance for f in filters])
        means[np.asarray(lost), 7] = 0.0
        diagonal = np.arange(8)
        for _ in range(steps):
            h = means[:, 3]
            position, velocity = _STD_POSITION * h, _STD_VELOCITY * h
            aspect, aspect_velocity = np.full_like(h, 1e-2), np.full_like(h, 1e-5)
            noise = np.stack([position, position, aspect, position, velocity, velocity, aspect_velocity, velocity], 1)
            means = means @ _TRANSITION.T
            covariances = _TRANSITION @ covariances @ _TRANSITION.T
            covariances[:, diagonal, diagonal] += noise**2
        for index, kalman in enumerate(filters):
            kalman.mean, kalman.covariance = means[index], covariances[index]

    @staticmethod
    def update(filters: list[_Kalman], boxes: np.ndarray) -> None:
        """Correct each filter with its measured box (`boxes`: one row per filter), all at once."""
        if not filters:
            return
        means = np.stack([f.mean for f in filters])
        covariances = np.stack([f.covariance for f in filters])
        position = _STD_POSITION * means[:, 3]
        noise = np.stack([position, position, np.full_like(position, 1e-1), position], 1) ** 2
        projected = covariances[:, :4, :4].copy()  # the observation picks the first four of the state
        projected[:, np.arange(4), np.arange(4)] += noise
        gains = np.linalg.solve(projected, covariances[:, :4, :]).transpose(0, 2, 1)
        means = means + (gains @ (_xyah(boxes) - means[:, :4])[..., None])[..., 0]
        covariances = covariances - gains @ projected @ gains.transpose(0, 2, 1)
        for index, kalman in enumerate(filters):
            kalman.mean, kalman.covariance = means[index], covariances[index]

    def box(self) -> np.ndarray:
        cx, cy, aspect, height = self.mean[:4]
        width = aspect * height
        return np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])


@dataclass(eq=False)
class _Track:
    kalman: _Kalman
    last_frame: int
    label: int  # the class it follows
    track_id: int = 0  # 0 until confirmed
    lost: bool = False

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0


def _associate(
    tracks: list[_Track], candidates: list[int], boxes: np.ndarray, labels: np.ndarray, min_iou: float
) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
    """Hungarian assignment of tracks to detections (indices into `boxes` and `labels`) of their class on IoU, pairs
    under `min_iou` excluded: the matches, the unmatched tracks and the unmatched detections."""
    if not tracks or not candidates:
        return [], list(tracks), list(candidates)
    from scipy.optimize import linear_sum_assignment  # imported off the event loop as a stream starts (manager)

    iou = iou_matrix(np.array([t.kalman.box() for t in tracks]), boxes[candidates])
    iou *= np.array([t.label for t in tracks])[:, None] == labels[candidates][None, :]
    cost = np.where(iou >= min_iou, 1.0 - iou, _NO_MATCH)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    matched_rows, matched_cols = {r for r, _ in pairs}, {c for _, c in pairs}
    return (
        [(tracks[r], candidates[c]) for r, c in pairs],
        [t for i, t in enumerate(tracks) if i not in matched_rows],
        [d for j, d in enumerate(candidates) if j not in matched_cols],
    )


class ByteTracker:
    """ByteTrack. Per frame: predict every track; match high-score detections (≥ `high_threshold`) to the confirmed
    tracks, active and lost, by IoU (≥ `match_iou`); match low-score ones (≥ `low_threshold`) to the confirmed active
    tracks left (IoU ≥ 0.5); active tracks still unmatched become lost, and are dropped after `lost_frames` frames
    unmatched. High-score detections left over confirm the tentative tracks they overlap (IoU ≥ 0.3; a tentative
    track not matched on its second frame is dropped); the rest, if ≥ `new_track_threshold`, start tentative tracks
    (confirmed at once on the tracker's first frame)."""

    def __init__(
        self,
        high_threshold: float = 0.5,
        low_threshold: float = 0.1,
        new_track_threshold: float = 0.6,
        match_iou: float = 0.2,
        lost_frames: int = 30,
    ) -> None:
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.new_track_threshold = new_track_threshold
        self.match_iou = match_iou
        self.lost_frames = lost_frames
        self._tracks: list[_Track] = []
        self._frame = 0
        self._last_id = 0

    def _confirm(self, track: _Track) -> None:
        self._last_id += 1
        track.track_id = self._last_id

    def update(self, detections: list[dict[str, Any]], steps: int = 1) -> list[dict[str, Any]]:
        """One frame's detections in, those that belong to confirmed tracks out (input order), each a copy with
        `track_id` added. `steps`: source frames since the last update (more than 1 where frames were dropped):
        tracks move that many frames' worth, and `lost_frames` counts source frames."""
        steps = max(1, min(steps, self.lost_frames + 1))  # beyond that every unmatched track is dropped anyway
        self._frame += steps
        boxes = np.array([_box_of(d) for d in detections]).reshape(-1, 4)
        labels = np.array([int(d.get("class", 0)) for d in detections], dtype=np.int64)
        scores = [float(d["confidence"]) for d in detections]
        high = [i for i, s in enumerate(scores) if s >= self.high_threshold]
        low = [i for i, s in enumerate(scores) if self.low_threshold <= s < self.high_threshold]
        _Kalman.predict([t.kalman for t in self._tracks], [t.lost for t in self._tracks], steps)
        output: list[tuple[int, _Track]] = []

        def matched(pairs: list[tuple[_Track, int]]) -> None:  # corrected together once every match is known
            for track, index in pairs:
                track.last_frame, track.lost = self._frame, False
                output.append((index, track))

        confirmed = [t for t in self._tracks if t.confirmed]
        pairs, unmatched, high_left = _associate(confirmed, high, boxes, labels, self.match_iou)
        matched(pairs)
        pairs, unmatched, _ = _associate([t for t in unmatched if not t.lost], low, boxes, labels, _LOW_MATCH_IOU)
        matched(pairs)
        for track in unmatched:
            track.lost = True

        tentative = [t for t in self._tracks if not t.confirmed]
        pairs, _, high_left = _associate(tentative, high_left, boxes, labels, _UNCONFIRMED_MATCH_IOU)
        for track, _index in pairs:
            self._confirm(track)
        matched(pairs)

        _Kalman.update([track.kalman for _, track in output], boxes[[index for index, _ in output]])
        kept = [t for t in self._tracks if t.confirmed and self._frame - t.last_frame <= self.lost_frames]
        for index in high_left:
            if scores[index] >= self.new_track_threshold:
                track = _Track(_Kalman(boxes[index]), last_frame=self._frame, label=int(labels[index]))
                if self._frame == 1:
                    self._confirm(track)
                    output.append((index, track))
                kept.append(track)
        self._tracks = kept
        return [
            dict(detections[index], track_id=track.track_id)
            for index, track in sorted(output, key=lambda pair: pair[0])
        ]
