"""The `kakehashi` command: `serve` a model over HTTP, or `predict` on images without a server."""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from kakehashi import __version__
from kakehashi.errors import KakehashiError
from kakehashi.protocols.vision import encode_predictions, parse_params
from kakehashi.repository.repository import ModelRepository
from kakehashi.settings import Settings, default_model_path


def _repository(model: Path | None, threads: int, max_pixels: int) -> tuple[ModelRepository, ThreadPoolExecutor]:
    compute = ThreadPoolExecutor(threads, thread_name_prefix="compute")
    try:
        return ModelRepository(model or default_model_path(), compute, max_pixels), compute
    except KakehashiError as exc:
        compute.shutdown()
        raise click.ClickException(exc.message) from None


@click.group()
@click.version_option(__version__, prog_name="kakehashi")
def main() -> None:
    """Kakehashi serves ONNX vision models: one command from a model file to a live endpoint."""


@main.command()
@click.argument("model", required=False, type=click.Path(exists=True, path_type=Path), envvar="KAKEHASHI_MODEL")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="KAKEHASHI_HOST", help="Address to bind.")
@click.option("--port", default=8000, show_default=True, envvar="KAKEHASHI_PORT", help="HTTP port.")
@click.option("--max-body-bytes", default=Settings.max_body_bytes, show_default=True,
              envvar="KAKEHASHI_MAX_BODY_BYTES", help="Largest request body accepted (413 above).")
@click.option("--max-pixels", default=Settings.max_pixels, show_default=True, envvar="KAKEHASHI_MAX_PIXELS",
              help="Largest image (width x height) decoded (413 above).")
@click.option("--threads", default=Settings.compute_threads, show_default=True, envvar="KAKEHASHI_THREADS",
              help="Threads for image decoding and pre/post-processing.")
@click.option("--log-level", default="info", show_default=True, envvar="KAKEHASHI_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--access-log/--no-access-log", default=False, envvar="KAKEHASHI_ACCESS_LOG",
              help="Log every request.")
def serve(model: Path | None, host: str, port: int, max_body_bytes: int, max_pixels: int, threads: int,
          log_level: str, access_log: bool) -> None:
    """Serve MODEL (an .onnx file, a model folder or a repository; default: the bundled person detector)."""
    import uvicorn

    from kakehashi.server.app import create_app
    from kakehashi.server.state import ServerState

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(model or default_model_path(), host, port, max_body_bytes, max_pixels, threads, log_level)
    repository, compute = _repository(model, threads, max_pixels)
    try:
        app = create_app(ServerState(settings, repository))
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)
    finally:
        compute.shutdown()


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", type=click.Path(exists=True, path_type=Path), envvar="KAKEHASHI_MODEL",
              help="An .onnx file or model folder (default: the bundled person detector).")
@click.option("--conf", help="Confidence threshold.")
@click.option("--iou", help="NMS IoU threshold.")
@click.option("--imgsz", help="Input size, 640 or height,width.")
@click.option("--max-det", help="Most detections per image.")
@click.option("--classes", help="Only these class indices, e.g. 0,2.")
@click.option("--top-k", help="Classes per image (classification).")
@click.option("--decimals", help="Decimal places in the answer.")
def predict(images: tuple[Path, ...], model: Path | None, **options: str | None) -> None:
    """Print the predictions for IMAGES as JSON (the same answer as the HTTP predict endpoint)."""
    repository, compute = _repository(model, Settings.compute_threads, Settings.max_pixels)
    if len(repository.entries) != 1:
        raise click.ClickException(
            f"{repository.path} holds several models ({', '.join(repository.entries)}); "
            f"pass --model {repository.path}/<name>"
        )
    values = {name: [value] for name, value in options.items() if value is not None}
    try:
        answer = asyncio.run(_predict_once(repository, [path.read_bytes() for path in images], values))
    except KakehashiError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        compute.shutdown()
    click.echo(answer)


async def _predict_once(repository: ModelRepository, images: list[bytes], values: dict[str, list[str]]) -> bytes:
    await asyncio.to_thread(repository.load_all)
    try:
        handle = repository.get(next(iter(repository.entries)))
        handle.require_ready()
        predictions = await handle.predict(images, parse_params(values, handle.config.defaults))
        return encode_predictions(handle.name, handle.version, predictions)
    finally:
        await repository.close_all()

if __name__ == "__main__":
    sys.exit(main())
