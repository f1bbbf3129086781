"""Triton's model configuration (`GET /v2/models/{m}/config`) for a served model version."""

from __future__ import annotations

from kakehashi.backends.registry import runtime_of
from kakehashi.repository.handle import ModelHandle
from kakehashi.tasks.pose import PoseTask

TRITON_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def _metadata(handle: ModelHandle) -> dict:
    """What Ultralytics' remote client reads: a Python-literal dict of names, imgsz, task, stride…"""
    task = handle.task
    if task is None:
        return {"task": "tensor"}
    meta: dict = {
        "task": task.kind,
        "names": dict(enumerate(task.names)),
        "imgsz": list(task.input.size),
        "stride": task.input.stride,
        "batch": handle.max_batch_size,
    }
    head = getattr(task, "head", None)  # detect, segment and pose models
    if head is not None:
        meta["end2end"] = head.name in ("end2end", "tf-od")
        meta["head"] = head.name
    if isinstance(task, PoseTask):
        meta["kpt_shape"] = list(task.kpt_shape)
    return meta


def model_config(handle: ModelHandle) -> dict:
    """Triton's JSON model configuration: `max_batch_size` 0 means the model takes no batch dimension here."""
    backend = handle.require_ready()
    batching = handle.max_batch_size > 1
    skip = 1 if batching else 0

    def tensor(spec) -> dict:
        return {"name": spec.name, "data_type": TRITON_TYPES[spec.datatype], "dims": list(spec.shape[skip:])}

    config: dict[str, object] = {
        "name": handle.name,
        "platform": backend.platform,
        "backend": runtime_of(backend).name,
        "max_batch_size": handle.max_batch_size if batching else 0,
        "input": [tensor(spec) for spec in backend.inputs],
        "output": [tensor(spec) for spec in backend.outputs],
        "instance_group": [{"name": handle.name, "kind": "KIND_CPU", "count": handle.runs_at_once}],
        "parameters": {
            "metadata": {"string_value": repr(_metadata(handle))},
            "runtime": {"string_value": handle.runtime},
            "precision": {"string_value": handle.choice.precision},
            "precision_agreement": {"string_value": handle.agreement},
        },
    }
    if batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": [handle.preferred_batch_size],
            "max_queue_delay_microseconds": int(handle.config.batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": handle.config.batching.max_queue_size},
        }
    return config
