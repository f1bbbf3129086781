"""The `kakehashi` command: `serve` models, `predict` or `batch` without a server, `bench` a server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from kakehashi import __version__
from kakehashi.batch.command import batch
from kakehashi.cli_options import (
    MODEL_PATH,
    load_repository,
    only_model,
    prediction_options,
    prediction_values,
    runtime_options,
)
from kakehashi.dataplane import DataPlane
from kakehashi.errors import InvalidInput, KakehashiError
from kakehashi.protocols.vision import encode_predictions
from kakehashi.repository.config import ServerDefaults
from kakehashi.repository.handle import ImagePrediction
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Limits, Settings, default_model_path
from kakehashi.streams.config import ServerConfig, load_server_config, stream_from_flag
from kakehashi.tasks.annotate import annotate
from kakehashi.tasks.images import decode_image, image_files


@click.group()
@click.version_option(__version__, prog_name="kakehashi")
def main() -> None:
    """Kakehashi serves ONNX vision models: one command from a model file to a live endpoint."""


def _option(flag: str, default: object, help: str, **kwargs) -> Callable:
    """A `serve` option whose env var is KAKEHASHI_<FLAG>."""
    env = "KAKEHASHI_" + flag.split("/")[0].lstrip("-").replace("-", "_").upper()
    return click.option(flag, default=default, show_default=default is not None, envvar=env, help=help, **kwargs)


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.argument("model", required=False, type=MODEL_PATH, envvar="KAKEHASHI_MODEL")
@_option(
    "--model-name",
    None,
    "Serve the single model at MODEL under this name (e.g. KServe's {{.Name}}), whatever its file or folder is called.",
)
@_option("--host", Settings.host, "Address to bind.")
@_option("--port", Settings.port, "HTTP port.")
@_option("--grpc-port", Settings.grpc_port, "gRPC port (0: no gRPC).")
@_option("--threads", Settings.compute_threads, "Threads for image decoding and pre/post-processing.")
@runtime_options
@_option(
    "--model-control",
    Settings.model_control,
    "Loading and unloading models while serving: none (the load and "
    "unload API answers 403), explicit (through the API) or poll (the API, and every --poll-seconds the "
    "repository is scanned: added models load, changed ones reload, removed ones unload).",
    type=click.Choice(["none", "explicit", "poll"]),
)
@_option(
    "--poll-seconds",
    Settings.poll_seconds,
    "With --model-control poll: seconds between scans.",
    type=click.FloatRange(min=0, min_open=True),
)
@_option("--grace-seconds", Settings.grace_seconds, "On SIGTERM, how long accepted requests may take to finish.")
@_option(
    "--api-keys-file",
    None,
    "File of API keys, one a line; keys also come from KAKEHASHI_API_KEYS "
    "(comma-separated). With keys, every request but health checks needs one.",
    type=_FILE,
)
@_option(
    "--admin-keys-file",
    None,
    "File of admin keys, one a line; also KAKEHASHI_ADMIN_KEYS (comma-separated). "
    "With keys, load and unload need an admin key; an admin key also works as an API key.",
    type=_FILE,
)
@_option("--tls-cert", None, "PEM certificate (chain): serve HTTPS and gRPC over TLS.", type=_FILE)
@_option("--tls-key", None, "PEM private key for --tls-cert.", type=_FILE)
@_option("--max-body-bytes", Settings.max_body_bytes, "Largest HTTP body or gRPC message (413 above).")
@_option("--max-header-bytes", Settings.max_header_bytes, "Largest HTTP request line + headers (431 above).")
@_option(
    "--header-timeout-seconds",
    Settings.header_timeout_seconds,
    "The request line and headers must arrive "
    "within this from a connection's first byte or its previous answer (idle keep-alive closes then too).",
    type=click.FloatRange(min=0.001),
)
@_option(
    "--body-timeout-seconds",
    Settings.body_timeout_seconds,
    "A request body must arrive in full within this (408 otherwise; 0: no limit).",
    type=click.FloatRange(min=0),
)
@_option(
    "--max-connections",
    Settings.max_connections,
    "HTTP connections served at once; more wait in the listen backlog until one closes.",
    type=click.IntRange(min=1),
)
@_option("--max-pixels", Limits.max_pixels, "Largest image (width x height) decoded (413 above).")
@_option("--max-images", Limits.max_images, "Most images in one predict request (413 above).")
@_option("--max-tensor-elements", Limits.max_tensor_elements, "Most elements in one input tensor (413 above).")
@_option("--request-timeout-ms", Limits.request_timeout_ms, "Answer 504 to a request not done by then (0: off).")
@_option(
    "--max-queue-wait-ms",
    Limits.max_queue_wait_ms,
    "Answer 429 at once to a request expected to wait longer for its turn (every model; 0: off).",
    type=click.FloatRange(min=0),
)
@_option(
    "--config",
    None,
    "YAML file with `streams:` to start with the server (sources, model, tracking, zones, lines, rules) and "
    "`events:` (the outbox and the sinks: webhook, mqtt, jsonl).",
    type=_FILE,
)
@click.option(
    "--stream",
    "stream_flags",
    multiple=True,
    metavar="NAME=URL[,key=value...]",
    help="Start a stream (repeatable): an RTSP/HTTP URL, a video file or a device; keys: model, fps, loop, "
    "realtime (false: a file's every frame, as fast as the model takes them), snapshot, and predict parameters "
    "(conf=0.5).",
)
@_option(
    "--allow-local-streams/--no-allow-local-streams",
    Settings.allow_local_streams,
    "Let POST /v1/streams read files and devices of this machine (by default the API starts network sources only).",
)
@_option(
    "--edge/--no-edge",
    False,
    "Small-device profile: one ONNX Runtime instance running one inference at a time, no batching, one "
    "pre/post-processing thread, no gRPC (fewer imports, less memory).",
)
@_option("--log-level", "info", "Log level.", type=click.Choice(["debug", "info", "warning", "error"]))
@_option("--access-log/--no-access-log", False, "Log every request.")
def serve(
    model: Path | None,
    model_name: str | None,
    threads: int,
    backend: str,
    precision: str,
    providers: tuple[str, ...],
    edge: bool,
    log_level: str,
    access_log: bool,
    max_pixels: int,
    max_images: int,
    max_tensor_elements: int,
    request_timeout_ms: float,
    max_queue_wait_ms: float,
    config: Path | None,
    stream_flags: tuple[str, ...],
    **options,
) -> None:
    """Serve MODEL (an .onnx file, a model folder, a repository or a bundled model: ssdlite-person, yolox-nano-coco;
    default: the bundled person detector)."""
    from kakehashi.server.auth import ApiKeys
    from kakehashi.server.runner import run
    from kakehashi.server.state import ServerState

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(options["tls_cert"]) != bool(options["tls_key"]):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if (
        options["model_control"] != "poll"
        and click.get_current_context().get_parameter_source("poll_seconds") != ParameterSource.DEFAULT
    ):
        raise click.UsageError("--poll-seconds needs --model-control poll")
    limits = Limits(max_pixels, max_images, max_tensor_elements, request_timeout_ms, max_queue_wait_ms)
    if edge:
        threads, options["grpc_port"] = 1, 0
    defaults = ServerDefaults(backend, precision, providers, edge, measure_in_background=True)
    settings = Settings(model or default_model_path(), compute_threads=threads, limits=limits, **options)
    keys = ApiKeys.load(settings.api_keys_file, settings.admin_keys_file)
    if settings.model_control != "none" and not keys.enabled:
        logging.getLogger(__name__).warning(
            "--model-control %s without keys: anyone who reaches the server can load "
            "and unload models (set --admin-keys-file)",
            settings.model_control,
        )
    server_config = _server_config(config, stream_flags)
    repository, compute = load_repository(model, threads, limits, defaults, model_name)
    try:
        run(ServerState(settings, repository, keys, server_config), log_level, access_log)
    finally:
        compute.shutdown()


def _server_config(path: Path | None, stream_flags: tuple[str, ...]) -> ServerConfig:
    """The `--config` file with the `--stream` flags' streams added; a bad one stops the command, saying why."""
    try:
        loaded = load_server_config(path) if path is not None else ServerConfig()
        streams = [*loaded.streams, *(stream_from_flag(flag) for flag in stream_flags)]
        return ServerConfig.model_validate({**loaded.model_dump(), "streams": [s.model_dump() for s in streams]})
    except (InvalidInput, ValueError) as exc:
        raise click.UsageError(exc.message if isinstance(exc, InvalidInput) else str(exc)) from None


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model",
    type=MODEL_PATH,
    envvar="KAKEHASHI_MODEL",
    help="An .onnx file, a model folder or a bundled model's name (default: the bundled person detector).",
)
@click.option("--name", help="The model to use when --model holds several.")
@click.option(
    "--save",
    type=click.Path(path_type=Path),
    help="Write the image with its boxes and labels drawn (a folder when there are several images).",
)
@runtime_options
@prediction_options
def predict(
    images: tuple[Path, ...],
    model: Path | None,
    name: str | None,
    save: Path | None,
    backend: str,
    precision: str,
    providers: tuple[str, ...],
    **options: str | None,
) -> None:
    """Print the predictions for IMAGES as JSON (the same answer as the HTTP predict endpoint)."""
    runtime = ServerDefaults(backend, precision, providers)
    repository, compute = load_repository(model, Settings.compute_threads, Limits(), runtime)
    chosen = only_model(repository, name)
    data = [path.read_bytes() for path in images]
    try:
        handle_name, version, predictions = asyncio.run(
            _predict_once(repository, chosen, data, prediction_values(options))
        )
        if save:
            targets = [save] if len(images) == 1 else [save / f"{path.stem}.jpg" for path in images]
            for image, prediction, target in zip(data, predictions, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                annotate(decode_image(image), prediction.results).save(target)
    except KakehashiError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        compute.shutdown()
    click.echo(encode_predictions(handle_name, version, predictions))


async def _predict_once(
    repository: ModelRepository, name: str, images: list[bytes], values: dict[str, list[str]]
) -> tuple[str, int, list[ImagePrediction]]:
    await asyncio.to_thread(repository.load_all)
    try:
        with DataPlane(repository).request("cli", name) as call:
            return call.name, call.version, await call.predict(images, values)
    finally:
        await repository.close_all()


def _levels(text: str | None, kind: type) -> list:
    return [kind(part) for part in text.split(",") if part.strip()] if text else []


@main.command()
@click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, envvar="KAKEHASHI_URL", help="The server to load."
)
@click.option("--model", required=True, help="Model name on the server.")
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Images (files or folders) for the predict endpoint; repeatable.",
)
@click.option(
    "--infer",
    "infer_encoding",
    is_flag=False,
    flag_value="json",
    default=None,
    type=click.Choice(["json", "binary", "grpc"]),
    help="Send OIP v2 infer requests with random tensors: JSON (the default), the HTTP binary extension, or gRPC.",
)
@click.option(
    "--grpc",
    "grpc_target",
    default=None,
    metavar="HOST:PORT",
    help="gRPC address for --infer grpc (default: the --url host, port 8001).",
)
@click.option("--shape", "shapes", multiple=True, help="Shape of an infer input, NAME=1,3,64,64; repeatable.")
@click.option("--query", default="", help="Query string for predict, e.g. conf=0.5&imgsz=320.")
@click.option("--concurrency", default="1,4,16", show_default=True, help="Closed-loop concurrency sweep.")
@click.option("--rate", default=None, help="Open-loop request rates per second (replaces the sweep).")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds of load before each measurement.")
@click.option("--duration", default=10.0, show_default=True, help="Seconds measured per step.")
@click.option("--output", type=click.Path(path_type=Path), help="Write the steps as .json or .csv.")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of latency percentiles against throughput over the steps.",
)
def bench(
    url: str,
    model: str,
    image_paths: tuple[Path, ...],
    infer_encoding: str | None,
    grpc_target: str | None,
    shapes: tuple[str, ...],
    query: str,
    concurrency: str,
    rate: str | None,
    warmup: float,
    duration: float,
    output: Path | None,
    chart: Path | None,
) -> None:
    """Load a running server like perf_analyzer: req/s, p50/p90/p99 and errors per step, every answer checked."""
    import httpx

    from kakehashi.bench import loadgen, payloads, report

    url = url.rstrip("/")
    target = url
    if infer_encoding:
        metadata = httpx.get(f"{url}/v2/models/{model}", timeout=30)
        if metadata.status_code != 200:
            raise click.ClickException(f"cannot read model '{model}' metadata: {metadata.text}")
        given = {name: [int(d) for d in dims.split(",")] for name, dims in (s.split("=", 1) for s in shapes)}
        meta = metadata.json()
        payload = payloads.infer_payload(model, meta["inputs"], given, meta["outputs"], infer_encoding)
        if infer_encoding == "grpc":
            target = f"grpc://{grpc_target or httpx.URL(url).host + ':8001'}"
    else:
        files = image_files(list(image_paths))
        if not files:
            raise click.ClickException("give --images (files or folders) or --infer")
        payload = payloads.predict_payload(model, files, query)
    click.echo(f"{payload.description} against {target}")
    click.echo(report.header())
    steps = []
    for level in _levels(rate, float) or _levels(concurrency, int):
        if rate:
            step = asyncio.run(loadgen.open_loop(target, payload, level, warmup, duration))
        else:
            step = asyncio.run(loadgen.closed_loop(target, payload, level, warmup, duration))
        steps.append(step)
        click.echo(report.line(step))
    if output:
        report.write(steps, output)
    if chart:
        report.chart(steps, chart, payload.description)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--calibration",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of representative images.",
)
@click.option(
    "--held-out",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Images for the report (default: every 4th calibration image, kept out of calibration).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: MODEL.int8.onnx.")
@click.option("--conf", default=0.25, show_default=True, help="Confidence threshold for the agreement report.")
def quantize(model: Path, calibration: Path, held_out: Path | None, out: Path | None, conf: float) -> None:
    """Write an INT8 copy of MODEL (ONNX Runtime static quantization) and report its speed-up and its agreement
    with the FP32 model on held-out images (needs the `quantize` extra)."""
    from kakehashi import quantize as int8

    logging.basicConfig(level=logging.ERROR)  # ONNX Runtime's quantizer warns per tensor on the root logger
    try:
        images = int8.image_files(calibration)
        if held_out is None:
            held, used = images[3::4], [p for i, p in enumerate(images) if i % 4 != 3]
        else:
            held, used = int8.image_files(held_out), images
        if not held or not used:
            raise click.UsageError("need at least one calibration and one held-out image (give 2+ images)")
        target = out or model.with_suffix(".int8.onnx")
        config, config_path = int8.model_config_for(model)
        int8.quantize(model, config, used, target)
        report = int8.evaluate(model, target, config_path, held, conf)
    except KakehashiError as exc:
        raise click.ClickException(exc.message) from None
    except ImportError as exc:
        raise click.ClickException(
            f"quantize needs the quantize extra: pip install 'kakehashi[quantize]' ({exc})"
        ) from None
    click.echo(f"wrote {target} (calibrated on {len(used)} images, report on {len(held)} held-out images)")
    for line in report.lines():
        click.echo(line)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: beside CHECKPOINT, .onnx.")
@click.option("--imgsz", default=640, show_default=True, help="Input size the model is exported for.")
@click.option(
    "--half",
    is_flag=True,
    help="FP16 weights (Ultralytics keeps FP32 inputs and outputs on CPU; either way it "
    "is served, FP16 outputs decoded in FP32).",
)
def export(checkpoint: Path, out: Path | None, imgsz: int, half: bool) -> None:
    """Convert an Ultralytics checkpoint (.pt) to ONNX with a dynamic batch and its metadata, ready to serve
    (needs the `export` extra: ultralytics and PyTorch; AGPL-3.0, never used when serving)."""
    from kakehashi.export import export as run_export

    try:
        written = run_export(checkpoint, out, imgsz, half)
    except KakehashiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"wrote {written}; serve it with: kakehashi serve {written}")


main.add_command(batch)


if __name__ == "__main__":
    sys.exit(main())
