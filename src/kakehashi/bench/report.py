"""Print load steps as a table and write them as JSON or CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson

from kakehashi.bench.loadgen import StepResult

COLUMNS = ("mode", "level", "requests", "throughput_rps", "p50_ms", "p90_ms", "p99_ms", "errors")


WIDTHS = (11, 7, 9, 14, 9, 9, 9, 7)


def header() -> str:
    return "  ".join(name.rjust(width) for name, width in zip(COLUMNS, WIDTHS))


def line(step: StepResult) -> str:
    """One step as a table row, with its errors by kind after it if it had any."""
    row = step.row()
    text = "  ".join(str(row[name]).rjust(width) for name, width in zip(COLUMNS, WIDTHS))
    return text + (f"   {dict(step.errors)}" if step.errors else "")


def write(steps: list[StepResult], path: Path) -> None:
    """JSON (a list of step objects) or CSV, by the file's suffix."""
    rows = [step.row() for step in steps]
    if path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "error_kinds"])
            writer.writeheader()
            for row in rows:
                writer.writerow(row | {"error_kinds": orjson.dumps(row["error_kinds"]).decode()})
    else:
        path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
