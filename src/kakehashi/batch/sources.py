"""What a batch job reads: every SOURCE argument expanded into items, each with a stable key for resuming.

A SOURCE is a folder (images found recursively), a glob pattern, a text file listing paths (one a line, `#`
comments, relative to the list's folder), a video file (every frame, or every Nth), or one image file.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from kakehashi.errors import InvalidInput
from kakehashi.tasks.images import IMAGE_TYPES

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}
LIST_SUFFIXES = {".txt", ".lst"}


@dataclass(frozen=True)
class Item:
    """One input: an image file, or one frame of a video (with its index and timestamp in seconds)."""

    key: str
    source: str
    read: Callable[[], bytes | Image.Image]
    frame: int | None = None
    timestamp: float | None = None

    def record(self) -> dict:
        """The fields that say which input a result belongs to."""
        fields: dict = {"source": self.source}
        if self.frame is not None:
            fields |= {"frame": self.frame, "timestamp": round(self.timestamp or 0.0, 6)}
        return fields


def _same(image: Image.Image) -> Image.Image:
    return image


def _key(path: Path) -> str:
    """The input's identity across runs: its absolute path (symlinks not followed), however it was typed."""
    return os.path.abspath(path)


def _image(path: Path) -> Item:
    return Item(_key(path), str(path), path.read_bytes)


def _listed(path: Path) -> Iterator[Path]:
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            listed = Path(entry)
            yield listed if listed.is_absolute() else path.parent / listed


def _expand(source: str) -> Iterator[Path]:
    path = Path(source)
    if path.is_dir():
        yield from sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_TYPES.keys() | VIDEO_SUFFIXES
        )
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        yield from _listed(path)
    elif path.is_file():
        yield path
    elif glob.has_magic(source):
        yield from sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    else:
        raise InvalidInput(f"{source}: no such file, folder or matching files")


def video_frames(path: Path, every: int) -> Iterator[Item]:
    """Every `every`-th frame of the video at `path`, decoded with PyAV."""
    import av  # only jobs reading videos load it

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index % every == 0:
                yield Item(
                    f"{_key(path)}#frame={index}",
                    str(path),
                    functools.partial(_same, frame.to_image()),
                    index,
                    float(frame.time or 0.0),
                )


def check_sources(sources: list[str]) -> None:
    """Refuse a SOURCE that is neither an existing path nor a glob pattern, before the job starts."""
    for source in sources:
        if not Path(source).exists() and not glob.has_magic(source):
            raise InvalidInput(f"{source}: no such file or folder (and not a glob pattern)")


def _frame_count(path: Path, every: int) -> int | None:
    try:
        import av

        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames
    except Exception:  # unreadable here means it fails (and is counted) when read
        return 1
    return -(-frames // every) if frames else None


def count(sources: list[str], every: int = 1) -> int | None:
    """How many inputs `items` will yield (None when a video does not say how many frames it has)."""
    total = 0
    for source in sources:
        for path in _expand(source):
            frames = _frame_count(path, every) if path.suffix.lower() in VIDEO_SUFFIXES else 1
            if frames is None:
                return None
            total += frames
    return total


def _failed(key: str, source: str, error: Exception) -> Item:
    def read() -> bytes:
        raise InvalidInput(f"{source}: {error}")

    return Item(key, source, read)


def items(sources: list[str], every: int = 1) -> Iterator[Item]:
    """Every input of `sources`, in order. A listed path that does not exist, or a video that cannot be read
    (from the first frame or part-way), still yields an item, which fails when read: it is recorded as an error."""
    for source in sources:
        for path in _expand(source):
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                yield _image(path)
                continue
            last = -1
            try:
                for item in video_frames(path, every):
                    last = item.frame if item.frame is not None else last
                    yield item
            except InvalidInput:
                raise
            except Exception as exc:  # PyAV's errors for a missing, corrupt or truncated video
                yield _failed(f"{_key(path)}#error-after={last}", str(path), exc)
