"""Prometheus metrics (served at `GET /metrics`); the Triton statistics extension reads the same series."""

from __future__ import annotations

import weakref

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no `_created` series: they double the exposition for no use here

_MODEL = ("model", "version")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("kakehashi_requests", "Requests answered, by outcome.", (*_MODEL, "protocol", "outcome"))
REQUEST_SECONDS = Histogram(
    "kakehashi_request_duration_seconds",
    "Time from request arrival to answer.",
    (*_MODEL, "protocol", "outcome"),
    buckets=_LATENCY_BUCKETS,
)
QUEUE_SECONDS = Histogram(
    "kakehashi_queue_duration_seconds", "Time a request waited for a batch to start.", _MODEL, buckets=_LATENCY_BUCKETS
)
PREPROCESS_SECONDS = Histogram(
    "kakehashi_preprocess_duration_seconds",
    "Decode and pre-processing time per image.",
    _MODEL,
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "kakehashi_inference_duration_seconds", "Runtime time per batch execution.", _MODEL, buckets=_LATENCY_BUCKETS
)
POSTPROCESS_SECONDS = Histogram(
    "kakehashi_postprocess_duration_seconds", "Post-processing time per image.", _MODEL, buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("kakehashi_batch_size", "Rows per batch execution.", _MODEL, buckets=_BATCH_BUCKETS)
BATCH_EXECUTIONS = Counter("kakehashi_batch_executions", "Batch executions by batch size.", (*_MODEL, "batch_size"))
BATCH_EXECUTION_SECONDS = Counter(
    "kakehashi_batch_execution_seconds", "Runtime seconds by batch size.", (*_MODEL, "batch_size")
)
QUEUE_DEPTH = Gauge("kakehashi_queue_depth", "Requests waiting in the model's queue.", _MODEL)
IN_FLIGHT = Gauge("kakehashi_inflight_requests", "Requests being handled.", ("protocol",))
LOAD_SECONDS = Gauge(
    "kakehashi_model_load_duration_seconds", "Time the model version took to load and warm up.", _MODEL
)
MODEL_STATE = Gauge(
    "kakehashi_model_state", "1 for the model version's current state, 0 for the others.", (*_MODEL, "state")
)


class RequestSeries:
    """The request counter and latency series of one model version, per protocol and outcome, each resolved once."""

    def __init__(self, model: str, version: str) -> None:
        self._labels = {"model": model, "version": version}
        self.by_outcome: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def record(self, protocol: str, outcome: str, seconds: float) -> None:
        series = self.by_outcome.get((protocol, outcome))
        if series is None:
            labels = {**self._labels, "protocol": protocol, "outcome": outcome}
            series = self.by_outcome[(protocol, outcome)] = (
                REQUESTS.labels(**labels),
                REQUEST_SECONDS.labels(**labels),
            )
        series[0].inc()
        series[1].observe(seconds)


UNATTRIBUTED = RequestSeries("", "")  # requests answered before a model was resolved (unknown name, bad path)


class VersionSeries:
    """Every series of one model version, resolved once when it loads; per-request code and the statistics use
    these objects and never look labels up or scan the registry. `of` shares one object among the handles of a
    version (a reload's new handle and the old one it replaces) and lets it go with the last of them."""

    _live: weakref.WeakValueDictionary[tuple[str, str], VersionSeries] = weakref.WeakValueDictionary()

    @classmethod
    def of(cls, model: str, version: str) -> VersionSeries:
        series = cls._live.get((model, version))
        if series is None:
            series = cls._live[(model, version)] = cls(model, version)
        return series

    def __init__(self, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        self._labels = labels
        self.requests = RequestSeries(model, version)
        self.queue = QUEUE_SECONDS.labels(**labels)
        self.preprocess = PREPROCESS_SECONDS.labels(**labels)
        self.postprocess = POSTPROCESS_SECONDS.labels(**labels)
        self.inference = INFERENCE_SECONDS.labels(**labels)
        self.batch_size = BATCH_SIZE.labels(**labels)
        self.queue_depth = QUEUE_DEPTH.labels(**labels)
        self.load_seconds = LOAD_SECONDS.labels(**labels)
        self.states: dict[str, Gauge] = {}
        self.batches: dict[int, tuple[Counter, Counter]] = {}

    def state(self, current: str, every: list[str]) -> None:
        """1 for the `current` state, 0 for the others."""
        for state in every:
            gauge = self.states.get(state)
            if gauge is None:
                gauge = self.states[state] = MODEL_STATE.labels(**self._labels, state=state)
            gauge.set(1 if state == current else 0)

    def batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.inference.observe(seconds)
        series = self.batches.get(rows)
        if series is None:
            labels = {**self._labels, "batch_size": str(rows)}
            series = self.batches[rows] = (BATCH_EXECUTIONS.labels(**labels), BATCH_EXECUTION_SECONDS.labels(**labels))
        series[0].inc()
        series[1].inc(seconds)


def samples(series: Counter | Gauge | Histogram) -> dict[str, float]:
    """The current samples of one resolved series by suffix (`_total`, `_count`, `_sum`, `_bucket:0.005`...)."""
    values: dict[str, float] = {}
    for family in series.collect():
        for sample in family.samples:
            suffix = sample.name[len(family.name) :]
            key = f"{suffix}:{sample.labels['le']}" if "le" in sample.labels else suffix
            values[key] = values.get(key, 0.0) + sample.value
    return values
