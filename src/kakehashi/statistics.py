"""Triton's statistics extension (`/v2/models/{m}/stats`) and the web page's live figures, computed from the
Prometheus series."""

from __future__ import annotations

from kakehashi.metrics import VersionSeries, samples
from kakehashi.servable import Servable


def _duration(values: dict[str, float]) -> dict[str, int]:
    return {"count": int(values.get("_count", 0)), "ns": int(values.get("_sum", 0) * 1e9)}


def _requests(series: VersionSeries, outcome: str | None = None) -> dict[str, float]:
    """Request latency samples summed over protocols (and outcomes, unless one is given)."""
    total: dict[str, float] = {}
    for (_, result), (_, latency) in list(series.requests.by_outcome.items()):
        if outcome is None or result == outcome:
            for key, value in samples(latency).items():
                total[key] = total.get(key, 0.0) + value
    return total


def model_statistics(handle: Servable) -> dict:
    """One model version's statistics in Triton's JSON form (durations summed in nanoseconds)."""
    series = handle.series
    success = _duration(_requests(series, "success"))
    every = _duration(_requests(series))
    batch_size = samples(series.batch_size)
    return {
        "name": handle.name,
        "version": str(handle.version),
        "last_inference": handle.last_inference_ms,
        "inference_count": int(batch_size.get("_sum", 0)),
        "execution_count": int(batch_size.get("_count", 0)),
        "inference_stats": {
            "success": success,
            "fail": {"count": every["count"] - success["count"], "ns": every["ns"] - success["ns"]},
            "queue": _duration(samples(series.queue)),
            "compute_input": _duration(samples(series.preprocess)),
            "compute_infer": _duration(samples(series.inference)),
            "compute_output": _duration(samples(series.postprocess)),
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_infer": {"count": int(samples(count)["_total"]), "ns": int(samples(seconds)["_total"] * 1e9)},
            }
            for size, (count, seconds) in sorted(series.batches.items())
        ],
        "memory_usage": [],
    }


def live_figures(handle: Servable) -> dict:
    """Cumulative counters of one model version for the web page, which turns two readings into rates and
    window percentiles: requests by outcome, the latency histogram of successful requests (upper bound in
    seconds → count), the queue depth now, and batch executions by batch size."""
    series = handle.series
    outcomes: dict[str, int] = {}
    for (_, outcome), (count, _) in list(series.requests.by_outcome.items()):
        outcomes[outcome] = outcomes.get(outcome, 0) + int(samples(count)["_total"])
    buckets = sorted(
        (
            (float(key.split(":", 1)[1]), int(value))
            for key, value in _requests(series, "success").items()
            if key.startswith("_bucket:")
        ),
        key=lambda bucket: bucket[0],
    )
    return {
        "requests": outcomes,
        "latency": [[bound, count] for bound, count in buckets],
        "queue_depth": handle.queue_depth,
        "batches": {str(size): int(samples(count)["_total"]) for size, (count, _) in sorted(series.batches.items())},
    }
