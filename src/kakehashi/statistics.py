"""Triton's statistics extension (`/v2/models/{m}/stats`) and the web page's live figures, computed from the
Prometheus series."""

from __future__ import annotations

from kakehashi.metrics import Snapshot
from kakehashi.repository.handle import ModelHandle


def _duration(snapshot: Snapshot, metric: str, **labels: str) -> dict[str, int]:
    return {"count": int(snapshot.total(f"{metric}_count", **labels)),
            "ns": int(snapshot.total(f"{metric}_sum", **labels) * 1e9)}


def model_statistics(handle: ModelHandle) -> dict:
    """One model version's statistics in Triton's JSON form (durations summed in nanoseconds)."""
    snapshot = Snapshot(handle.name, str(handle.version))
    success = _duration(snapshot, "kakehashi_request_duration_seconds", outcome="success")
    every = _duration(snapshot, "kakehashi_request_duration_seconds")
    batch_sizes = sorted(int(size) for size in snapshot.label_values("kakehashi_batch_executions_total", "batch_size"))
    return {
        "name": handle.name,
        "version": str(handle.version),
        "last_inference": handle.last_inference_ms,
        "inference_count": int(snapshot.total("kakehashi_batch_size_sum")),
        "execution_count": int(snapshot.total("kakehashi_batch_size_count")),
        "inference_stats": {
            "success": success,
            "fail": {"count": every["count"] - success["count"], "ns": every["ns"] - success["ns"]},
            "queue": _duration(snapshot, "kakehashi_queue_duration_seconds"),
            "compute_input": _duration(snapshot, "kakehashi_preprocess_duration_seconds"),
            "compute_infer": _duration(snapshot, "kakehashi_inference_duration_seconds"),
            "compute_output": _duration(snapshot, "kakehashi_postprocess_duration_seconds"),
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {"batch_size": size,
             "compute_infer": {
                 "count": int(snapshot.total("kakehashi_batch_executions_total", batch_size=str(size))),
                 "ns": int(snapshot.total("kakehashi_batch_execution_seconds_total", batch_size=str(size)) * 1e9)}}
            for size in batch_sizes
        ],
        "memory_usage": [],
    }


def live_figures(handle: ModelHandle) -> dict:
    """Cumulative counters of one model version for the web page, which turns two readings into rates and
    window percentiles: requests by outcome, the latency histogram of successful requests (upper bound in
    seconds → count), the queue depth now, and batch executions by batch size."""
    snapshot = Snapshot(handle.name, str(handle.version))
    outcomes = snapshot.label_values("kakehashi_requests_total", "outcome")
    bounds = sorted(snapshot.label_values("kakehashi_request_duration_seconds_bucket", "le"), key=float)
    sizes = sorted(snapshot.label_values("kakehashi_batch_executions_total", "batch_size"), key=int)
    return {
        "requests": {outcome: int(snapshot.total("kakehashi_requests_total", outcome=outcome)) for outcome in outcomes},
        "latency": [[float(le), int(snapshot.total("kakehashi_request_duration_seconds_bucket", le=le,
                                                     outcome="success"))] for le in bounds],
        "queue_depth": handle.queue_depth,
        "batches": {size: int(snapshot.total("kakehashi_batch_executions_total", batch_size=size)) for size in sizes},
    }
