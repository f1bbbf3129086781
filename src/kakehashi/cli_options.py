"""What several commands share: the runtime options, the prediction parameters and loading a model repository for
in-process use."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from kakehashi.backends.onnxruntime import provider_name
from kakehashi.errors import KakehashiError
from kakehashi.protocols.predict_query import QUERY_SCHEMAS
from kakehashi.repository.config import PRECISIONS, ServerDefaults
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, bundled_models, default_model_path


class ModelPath(click.ParamType):
    """An .onnx file, a model folder or a repository; or the name of a bundled model (`yolox-nano-coco`)."""

    name = "model"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = model_path(str(value))
        if not path.exists():
            self.fail(f"{value} does not exist, and is not a bundled model ({', '.join(bundled_models())})", param, ctx)
        return path


def model_path(text: str) -> Path:
    """`text` as a path, or the folder of the bundled model of that name where no such path exists."""
    path = Path(text)
    return path if path.exists() else bundled_models().get(text, path)


MODEL_PATH = ModelPath()
PREDICTION_OPTIONS = tuple(name for name in QUERY_SCHEMAS if name != "timeout")  # a deadline is the server's


def _providers(context: click.Context, parameter: click.Parameter, text: str) -> tuple[str, ...]:
    """`cuda,cpu` as ONNX Runtime's full provider names, best first."""
    try:
        chosen = tuple(provider_name(name.strip()) for name in text.split(",") if name.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected {exc}") from None
    return chosen or ServerDefaults().providers


def runtime_options(command: Callable) -> Callable:
    """`--backend`, `--precision` and `--providers` (also KAKEHASHI_BACKEND, KAKEHASHI_PRECISION,
    KAKEHASHI_PROVIDERS), taken alike by every command that runs models, for the models whose model.yaml does not
    choose: `providers` arrives as full names."""
    command = click.option(
        "--precision",
        default="auto",
        show_default=True,
        envvar="KAKEHASHI_PRECISION",
        type=click.Choice(PRECISIONS),
        help="Precision for models whose model.yaml does not choose one (auto: at load, time what this CPU computes "
        "in, and int8 where model.int8.onnx lies beside the model, and serve the fastest whose answers agree with "
        "f32's on calibration images).",
    )(command)
    command = click.option(
        "--providers",
        default="cpu",
        show_default=True,
        envvar="KAKEHASHI_PROVIDERS",
        callback=_providers,
        help="ONNX Runtime execution providers in order of preference, e.g. cuda,cpu (for models whose model.yaml "
        "lists none); unavailable ones are skipped with a warning.",
    )(command)
    return click.option(
        "--backend",
        default="auto",
        show_default=True,
        envvar="KAKEHASHI_BACKEND",
        type=click.Choice(ServerDefaults.backend_choices()),
        help="Runtime for models whose model.yaml does not choose one (auto: at load, time ONNX Runtime and "
        "OpenVINO, when installed, and keep the faster).",
    )(command)


def prediction_options(command: Callable) -> Callable:
    """One option per predict endpoint parameter (`--conf`, `--max-det`, ...), described as its OpenAPI document
    describes it."""
    for name in reversed(PREDICTION_OPTIONS):
        command = click.option("--" + name.replace("_", "-"), help=QUERY_SCHEMAS[name]["description"])(command)
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
