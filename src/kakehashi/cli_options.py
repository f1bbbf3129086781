"""What several commands share: the prediction parameters and loading a model repository for in-process use."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from kakehashi.errors import KakehashiError
from kakehashi.repository.config import ServerDefaults
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, default_model_path

PREDICTION_OPTIONS = ("conf", "iou", "imgsz", "max_det", "classes", "top_k", "decimals")


def prediction_options(command: Callable) -> Callable:
    """`--conf --iou --imgsz --max-det --classes --top-k --decimals`, as the predict endpoint takes them."""
    for flag, text in reversed(
        [
            ("--conf", "Confidence threshold."),
            ("--iou", "NMS IoU threshold."),
            ("--imgsz", "Input size, 640 or height,width."),
            ("--max-det", "Most detections per image."),
            ("--classes", "Only these class indices, e.g. 0,2."),
            ("--top-k", "Classes per image (classification)."),
            ("--decimals", "Decimal places in the answer."),
        ]
    ):
        command = click.option(flag, help=text)(command)
    return command


def prediction_values(options: dict) -> dict[str, list[str]]:
    """The given prediction options in the form `parse_params` (and the HTTP query string) takes."""
    return {name: [str(options[name])] for name in PREDICTION_OPTIONS if options.get(name) is not None}


def load_repository(
    model: Path | None,
    threads: int,
    limits: Limits,
    defaults: ServerDefaults = ServerDefaults(),
    name: str | None = None,
) -> tuple[ModelRepository, ThreadPoolExecutor]:
    """The repository at `model` (default: the bundled one) with its compute pool, its single model served as
    `name` if given; errors as click errors."""
    compute = ThreadPoolExecutor(threads, thread_name_prefix="compute")
    try:
        return ModelRepository(model or default_model_path(), compute, limits, defaults, name), compute
    except KakehashiError as exc:
        compute.shutdown()
        raise click.ClickException(exc.message) from None


def only_model(repository: ModelRepository, name: str | None) -> str:
    """`name`, or the repository's only model; a click error if that is ambiguous."""
    if name is not None:
        return name
    if len(repository.entries) != 1:
        raise click.ClickException(
            f"{repository.path} holds several models ({', '.join(repository.entries)}); choose one with --name"
        )
    return next(iter(repository.entries))
