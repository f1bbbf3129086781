"""Tables from the journal: CSV (one row per detection; one with only the input's fields for an input where
nothing was found or that failed) and Parquet (the same rows).

Oriented boxes fill `x3, y3, x4, y4` too; keypoints and mask outlines are JSON text (`{"x": […], "y": […]…}`)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import orjson

from kakehashi.errors import InvalidInput

BOX = ["x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"]
COLUMNS = ["source", "frame", "timestamp", "class", "name", "confidence", *BOX, "keypoints", "segments", "error"]


def rows(journal: Path) -> Iterator[dict]:
    """One row per detection (classification: per class), one per input with none or that failed; journal order."""
    with journal.open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            base = {"source": record["source"], "frame": record.get("frame"), "timestamp": record.get("timestamp")}
            if "error" in record:
                yield {**dict.fromkeys(COLUMNS), **base, "error": record["error"]}
                continue
            if not record["results"]:  # processed, nothing found: still a row, so no input is missing
                yield {**dict.fromkeys(COLUMNS), **base}
            for result in record["results"]:
                box = result.get("box") or {}
                shapes = {key: orjson.dumps(result[key]).decode() for key in ("keypoints", "segments") if key in result}
                yield {
                    **dict.fromkeys(COLUMNS),
                    **base,
                    "class": result["class"],
                    "name": result["name"],
                    "confidence": result["confidence"],
                    **{k: box.get(k) for k in BOX},
                    **shapes,
                }


def write_table(journal: Path, out: Path) -> None:
    """Write the journal's rows to `out` as `.csv` or `.parquet`."""
    if out.suffix == ".csv":
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows(journal))
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInput("Parquet output needs pyarrow: pip install 'kakehashi[parquet]'") from None
    types = {
        "source": pa.string(),
        "frame": pa.int64(),
        "timestamp": pa.float64(),
        "class": pa.int64(),
        "name": pa.string(),
        "confidence": pa.float64(),
        **dict.fromkeys(BOX, pa.float64()),
        "keypoints": pa.string(),
        "segments": pa.string(),
        "error": pa.string(),
    }
    table = pa.Table.from_pylist(list(rows(journal)), schema=pa.schema(list(types.items())))
    pq.write_table(table, out)
