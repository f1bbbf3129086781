"""Prometheus series per stream: what its source read, dropped and skipped, reconnects (read off the live sources at
each scrape), frames inferred and failed, events, and the lag from frame time to results pushed."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kakehashi.streams.source import FrameSource

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
INFERRED = Counter("kakehashi_stream_frames_inferred", "Frames of a stream answered by its model.", ("stream",))
FAILED = Counter("kakehashi_stream_frames_failed", "Frames of a stream whose inference failed.", ("stream",))
EVENTS = Counter("kakehashi_stream_events", "Events a stream's rules raised (recorded in the outbox).", ("stream",))
LAG = Histogram(
    "kakehashi_stream_lag_seconds",
    "End-to-end lag: the frame's decode time to its results pushed.",
    ("stream",),
    buckets=_LAG_BUCKETS,
)


class StreamSeries:
    """One stream's series, resolved once."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.failed = FAILED.labels(stream=stream)
        self.events = EVENTS.labels(stream=stream)
        self._inferred = INFERRED.labels(stream=stream)
        self._lag = LAG.labels(stream=stream)

    def inferred(self, lag_seconds: float) -> None:
        self._inferred.inc()
        self._lag.observe(lag_seconds)

    def remove(self) -> None:
        """Drop the stream's series (it was deleted; a new stream of the same name starts from zero)."""
        for series in (INFERRED, FAILED, EVENTS, LAG):
            try:
                series.remove(self.stream)
            except KeyError:
                pass


class _SourceCollector(Collector):
    """The live sources' own counters, read at each scrape."""

    def __init__(self) -> None:
        self.sources: weakref.WeakValueDictionary[str, FrameSource] = weakref.WeakValueDictionary()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = {
            "read": CounterMetricFamily(
                "kakehashi_stream_frames_read", "Frames read from the source.", labels=["stream"]
            ),
            "undecoded": CounterMetricFamily(
                "kakehashi_stream_frames_undecoded",
                "Frames read but not decoded, no other frame referring to them, while inference was behind (counted "
                "as dropped too).",
                labels=["stream"],
            ),
            "dropped": CounterMetricFamily(
                "kakehashi_stream_frames_dropped",
                "Frames replaced by a newer one before inference took them (inference slower than the source).",
                labels=["stream"],
            ),
            "skipped": CounterMetricFamily(
                "kakehashi_stream_frames_skipped", "Frames skipped to keep to the stream's fps cap.", labels=["stream"]
            ),
            "reconnects": CounterMetricFamily(
                "kakehashi_stream_reconnects",
                "Times the source was connected again after it dropped.",
                labels=["stream"],
            ),
        }
        decode = GaugeMetricFamily(
            "kakehashi_stream_decode_seconds", "Moving average of the time to decode one frame.", labels=["stream"]
        )
        for stream, source in list(self.sources.items()):
            for name, family in counters.items():
                family.add_metric([stream], float(getattr(source, name)))
            decode.add_metric([stream], float(source.decode_seconds))
        yield from counters.values()
        yield decode


SOURCES = _SourceCollector()
REGISTRY.register(SOURCES)
