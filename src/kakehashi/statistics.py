"""Triton's statistics extension (`/v2/models/{m}/stats`), computed from the Prometheus series."""

from __future__ import annotations

from kakehashi.metrics import total
from kakehashi.repository.handle import ModelHandle


def _duration(metric: str, **labels: str) -> dict[str, int]:
    return {"count": int(total(f"{metric}_count", **labels)), "ns": int(total(f"{metric}_sum", **labels) * 1e9)}


def model_statistics(handle: ModelHandle) -> dict:
    """One model version's statistics in Triton's JSON form (durations summed in nanoseconds)."""
    labels = {"model": handle.name, "version": str(handle.version)}
    success = _duration("kakehashi_request_duration_seconds", **labels, outcome="success")
    every = _duration("kakehashi_request_duration_seconds", **labels)
    batch_sizes = sorted({int(size) for size in handle.batch_sizes_seen})
    return {
        "name": handle.name,
        "version": str(handle.version),
        "last_inference": handle.last_inference_ms,
        "inference_count": int(total("kakehashi_batch_size_sum", **labels)),
        "execution_count": int(total("kakehashi_batch_size_count", **labels)),
        "inference_stats": {
            "success": success,
            "fail": {"count": every["count"] - success["count"], "ns": every["ns"] - success["ns"]},
            "queue": _duration("kakehashi_queue_duration_seconds", **labels),
            "compute_input": _duration("kakehashi_preprocess_duration_seconds", **labels),
            "compute_infer": _duration("kakehashi_inference_duration_seconds", **labels),
            "compute_output": _duration("kakehashi_postprocess_duration_seconds", **labels),
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {"batch_size": size,
             "compute_infer": {
                 "count": int(total("kakehashi_batch_executions_total", **labels, batch_size=str(size))),
                 "ns": int(total("kakehashi_batch_execution_seconds_total", **labels, batch_size=str(size)) * 1e9)}}
            for size in batch_sizes
        ],
        "memory_usage": [],
    }
