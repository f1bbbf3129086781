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


def chart(steps: list[StepResult], path: Path, title: str) -> None:
    """A PNG of latency percentiles (p50, p90, p99) against throughput, one point per step, labelled with its
    concurrency or rate (matplotlib, from the `bench` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [step.row() for step in steps]
    throughput = [row["throughput_rps"] for row in rows]
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for key, style in (("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^:")):
        axes.plot(throughput, [row[key] for row in rows], style, label=key.removesuffix("_ms"))
    for row, x in zip(rows, throughput):
        level = f"{row['level']:g}"
        axes.annotate(
            f"c={level}" if row["mode"] == "concurrency" else f"{level}/s",
            (x, row["p99_ms"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    axes.set(xlabel="throughput (requests/s)", ylabel="latency (ms)", title=title)
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
