"""`kakehashi batch`: predict over folders, globs, path lists and videos; results to JSON Lines, CSV or Parquet."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from kakehashi.batch.journal import Journal
from kakehashi.batch.progress import Progress
from kakehashi.batch.runner import Summary, run_job
from kakehashi.batch.sources import check_sources, count, items
from kakehashi.batch.writers import write_table
from kakehashi.cli_options import load_repository, model_path, only_model, prediction_options, prediction_values
from kakehashi.dataplane import DataPlane
from kakehashi.errors import KakehashiError
from kakehashi.settings import Limits, Settings

FORMATS = (".jsonl", ".csv", ".parquet")


def journal_path(out: Path) -> Path:
    """JSON Lines output is its own journal; CSV and Parquet are written from one beside them at the end."""
    return out if out.suffix == ".jsonl" else out.with_name(out.name + ".journal.jsonl")


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results: .jsonl (one line per input), .csv (one row per detection) or .parquet.",
)
@click.option(
    "--model",
    envvar="KAKEHASHI_MODEL",
    help="An .onnx file, model folder, repository or bundled model (default: the bundled person detector); "
    "with --url, the served model's name.",
)
@click.option("--name", help="The model to use when --model is a repository holding several.")
@click.option("--url", help="Run against this Kakehashi server instead of in-process.")
@click.option("--api-key", envvar="KAKEHASHI_API_KEY", help="API key for --url (or KAKEHASHI_API_KEY).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1), help="Every Nth video frame.")
@click.option(
    "--save-images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write annotated copies (boxes and labels) to this folder.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted job: inputs already in --out are skipped.")
@click.option("--overwrite", is_flag=True, help="Start over even if --out exists.")
@click.option("--concurrency", type=click.IntRange(1), help="Inputs in flight (default: enough to fill batches).")
@click.option("--quiet", is_flag=True, help="No progress output, only the summary.")
@prediction_options
def batch(
    sources: tuple[str, ...],
    out: Path,
    model: str | None,
    name: str | None,
    url: str | None,
    api_key: str | None,
    every: int,
    save_images: Path | None,
    resume: bool,
    overwrite: bool,
    concurrency: int | None,
    quiet: bool,
    **options: str | None,
) -> None:
    """Predict every image and video frame in SOURCES (folders, globs, lists of paths, videos).

    Results are appended as they complete, so an interrupted job loses nothing: run it again with --resume.
    Exit status 0 if every input succeeded, 1 if some failed (each has an error line; earlier runs' too),
    130 if interrupted.
    """
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(message)s")
    if out.suffix not in FORMATS:
        raise click.UsageError(f"--out must end in {', '.join(FORMATS)}")
    journal = journal_path(out)
    if journal.exists() and not (resume or overwrite):
        raise click.UsageError(f"{journal} exists: pass --resume to continue that job or --overwrite to start over")
    values = prediction_values(options)
    try:
        check_sources(list(sources))
        inputs = items(list(sources), every)
        record = Journal(journal, resume)
        progress = Progress(count(list(sources), every), quiet)
        if url:
            summary = asyncio.run(
                _remote(url, model, api_key, values, inputs, record, progress, concurrency, save_images)
            )
        else:
            summary = _local(
                model_path(model) if model else None, name, values, inputs, record, progress, concurrency, save_images
            )
        if out != journal:
            write_table(journal, out)
    except KakehashiError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(summary.line(), err=True)
    sys.exit(130 if summary.interrupted else 1 if summary.any_failed else 0)


def _local(
    model: Path | None,
    name: str | None,
    values: dict,
    inputs,
    journal: Journal,
    progress: Progress,
    concurrency: int | None,
    save_images: Path | None,
) -> Summary:
    from kakehashi.batch.predictors import LocalPredictor

    if model is not None and not model.exists():
        raise click.ClickException(f"--model {model}: no such file or folder")
    # no server-wide request timeout offline: the job bounds what is in flight itself
    repository, compute = load_repository(model, Settings.compute_threads, Limits(request_timeout_ms=0))
    chosen = only_model(repository, name)

    async def job() -> Summary:
        await asyncio.to_thread(repository.load_all)
        try:
            plane = DataPlane(repository)
            servable = plane.check(chosen, values)
            predictor = LocalPredictor(plane, chosen, values)
            # enough in flight that a full batch waits on every run slot while the next ones are decoded
            slots = concurrency or 2 * servable.preferred_batch_size * servable.runs_at_once + (os.cpu_count() or 2)
            return await run_job(predictor, inputs, journal, slots, progress, save_images)
        finally:
            await repository.close_all()

    try:
        return asyncio.run(job())
    finally:
        compute.shutdown()


async def _remote(
    url: str,
    model: str | None,
    api_key: str | None,
    values: dict,
    inputs,
    journal: Journal,
    progress: Progress,
    concurrency: int | None,
    save_images: Path | None,
) -> Summary:
    import aiohttp

    from kakehashi.batch.predictors import RemotePredictor, remote_model

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    query = {key: value[0] for key, value in values.items()}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        name = model or await remote_model(session, url, headers)
        predictor = RemotePredictor(session, url, name, query, headers)
        return await run_job(predictor, inputs, journal, concurrency or 8, progress, save_images)
