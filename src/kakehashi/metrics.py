"""Prometheus metrics (served at `GET /metrics`); the Triton statistics extension reads the same series."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no `_created` series: they double the exposition for no use here

_MODEL = ("model", "version")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter("kakehashi_requests", "Requests answered, by outcome.", (*_MODEL, "protocol", "outcome"))
REQUEST_SECONDS = Histogram("kakehashi_request_duration_seconds", "Time from request arrival to answer.",
                            (*_MODEL, "protocol", "outcome"), buckets=_LATENCY_BUCKETS)
QUEUE_SECONDS = Histogram("kakehashi_queue_duration_seconds", "Time a request waited for a batch to start.",
                          _MODEL, buckets=_LATENCY_BUCKETS)
PREPROCESS_SECONDS = Histogram("kakehashi_preprocess_duration_seconds", "Decode and pre-processing time per image.",
                               _MODEL, buckets=_LATENCY_BUCKETS)
INFERENCE_SECONDS = Histogram("kakehashi_inference_duration_seconds", "Runtime time per batch execution.",
                              _MODEL, buckets=_LATENCY_BUCKETS)
POSTPROCESS_SECONDS = Histogram("kakehashi_postprocess_duration_seconds", "Post-processing time per image.",
                                _MODEL, buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("kakehashi_batch_size", "Rows per batch execution.", _MODEL, buckets=_BATCH_BUCKETS)
BATCH_EXECUTIONS = Counter("kakehashi_batch_executions", "Batch executions by batch size.", (*_MODEL, "batch_size"))
BATCH_EXECUTION_SECONDS = Counter("kakehashi_batch_execution_seconds", "Runtime seconds by batch size.",
                                  (*_MODEL, "batch_size"))
QUEUE_DEPTH = Gauge("kakehashi_queue_depth", "Requests waiting in the model's queue.", _MODEL)
IN_FLIGHT = Gauge("kakehashi_inflight_requests", "Requests being handled.", ("protocol",))
LOAD_SECONDS = Gauge("kakehashi_model_load_duration_seconds", "Time the model version took to load and warm up.",
                     _MODEL)
MODEL_STATE = Gauge("kakehashi_model_state", "1 for the model version's current state, 0 for the others.",
                    (*_MODEL, "state"))


class Snapshot:
    """Every Kakehashi sample of one model version, read from the registry once."""

    def __init__(self, model: str, version: str) -> None:
        self.samples = [sample for family in REGISTRY.collect() if family.name.startswith("kakehashi_")
                        for sample in family.samples
                        if sample.labels.get("model") == model and sample.labels.get("version") == version]

    def total(self, sample_name: str, **labels: str) -> float:
        """Sum of a sample (e.g. `kakehashi_queue_duration_seconds_sum`) over series matching `labels`."""
        return sum(s.value for s in self.samples
                   if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()))

    def label_values(self, sample_name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == sample_name}
