"""Run a batch job: read inputs, predict with bounded concurrency (so decoding, pre/post-processing and
inference overlap and the batcher forms full batches), append each result to the journal as it completes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from kakehashi.batch.journal import Journal
from kakehashi.batch.progress import Progress
from kakehashi.batch.sources import Item
from kakehashi.errors import KakehashiError
from kakehashi.tasks.annotate import annotate
from kakehashi.tasks.images import decode_image

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """Answers one image (bytes, or an already decoded frame) with the predict endpoint's image object."""

    async def predict(self, data: bytes | Image.Image) -> dict: ...


@dataclass
class Summary:
    """This run's counts, and those of the inputs an earlier run had done (`skipped`, `skipped_failed`)."""

    succeeded: int
    failed: int
    skipped: int
    skipped_failed: int
    seconds: float
    interrupted: bool

    @property
    def any_failed(self) -> bool:
        return bool(self.failed or self.skipped_failed)

    def line(self) -> str:
        rate = self.succeeded / self.seconds if self.seconds else 0.0
        earlier = f" ({self.skipped_failed} of them failed)" if self.skipped_failed else ""
        text = (
            f"{self.succeeded} succeeded, {self.failed} failed, {self.skipped} already done{earlier} "
            f"in {self.seconds:.1f} s ({rate:.1f} images/s)"
        )
        return text + (" — interrupted: run again with --resume to finish" if self.interrupted else "")


def _annotated_path(save_dir: Path, item: Item) -> Path:
    """Where the drawn copy of `item` goes: its name, a short hash of its key (two inputs named alike in
    different folders never overwrite each other) and, for a video, the frame index."""
    name = f"{Path(item.source).stem}-{hashlib.sha1(item.key.split('#', 1)[0].encode()).hexdigest()[:8]}"
    if item.frame is not None:
        name += f"_frame{item.frame:06d}"
    return save_dir / f"{name}.jpg"


def _save_annotated(data: bytes | Image.Image, results: list[dict], path: Path) -> None:
    image = data if isinstance(data, Image.Image) else decode_image(data)
    annotate(image, results).save(path, quality=90)


async def run_job(
    predictor: Predictor,
    inputs: Iterator[Item],
    journal: Journal,
    concurrency: int,
    progress: Progress,
    save_dir: Path | None = None,
) -> Summary:
    """Predict every input not already in the journal; SIGINT/SIGTERM stop taking new inputs, let those in
    flight finish and be recorded, and return with `interrupted` set."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task] = set()
    counts = {"ok": 0, "failed": 0, "skipped": 0, "skipped_failed": 0}
    started = time.monotonic()

    async def one(item: Item) -> None:
        try:
            record: dict = {"key": item.key, **item.record()}
            try:
                data = await asyncio.to_thread(item.read)
                answer = await predictor.predict(data)
                record |= answer
                if save_dir:
                    drawn = _annotated_path(save_dir, item)
                    await asyncio.to_thread(_save_annotated, data, answer["results"], drawn)
                    record["annotated"] = str(drawn)
            except KakehashiError as exc:
                record["error"] = exc.message
            except OSError as exc:
                record["error"] = f"cannot read {item.source}: {exc.strerror or exc}"
            except Exception as exc:  # anything else still fails only this input, recorded, never lost
                log.exception("%s failed", item.source)
                record["error"] = f"{type(exc).__name__}: {exc}"
            journal.append(record)
            failed = "error" in record
            counts["failed" if failed else "ok"] += 1
            progress.advance(failed)
        finally:
            slots.release()

    try:
        while not stop.is_set():
            item = await asyncio.to_thread(next, inputs, None)  # video frames decode off the event loop
            if item is None:
                break
            if item.key in journal.done:
                counts["skipped"] += 1
                counts["skipped_failed"] += journal.done[item.key]
                progress.skip()
                continue
            await slots.acquire()
            task = asyncio.ensure_future(one(item))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        journal.close()
        progress.close()
    return Summary(
        counts["ok"],
        counts["failed"],
        counts["skipped"],
        counts["skipped_failed"],
        time.monotonic() - started,
        stop.is_set(),
    )


def encode_frame(image: Image.Image) -> bytes:
    """A decoded frame as JPEG bytes, for sending to a server."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()
