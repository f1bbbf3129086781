"""`kakehashi bench` loads a real server, counts answers and checks each one."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from conftest import IMAGES


def bench(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kakehashi", "bench", "--url", server.url, "--warmup", "0.2", "--duration", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_closed_loop_predict_writes_json_and_a_chart(default_server, tmp_path):
    from PIL import Image

    out, chart = tmp_path / "steps.json", tmp_path / "latency.png"
    result = bench(
        default_server,
        "--model",
        "ssdlite-person",
        "--images",
        str(IMAGES / "astronaut.png"),
        "--concurrency",
        "1,2",
        "--output",
        str(out),
        "--chart",
        str(chart),
    )
    assert result.returncode == 0, result.stderr
    steps = json.loads(out.read_text())
    assert [s["level"] for s in steps] == [1, 2]
    assert all(s["requests"] > 0 and s["errors"] == 0 and s["p50_ms"] <= s["p99_ms"] for s in steps)
    assert "throughput_rps" in result.stdout
    image = Image.open(chart)
    assert image.format == "PNG" and image.size == (900, 540)
    colours = image.convert("RGB").getcolors(1_000_000)
    assert len(colours) > 50  # axes, three lines, labels: a drawn chart, not a blank canvas


@pytest.mark.parametrize("encoding", [[], ["binary"], ["grpc"]], ids=["json", "binary", "grpc"])
def test_open_loop_infer_writes_csv(default_server, tmp_path, encoding):
    out = tmp_path / "steps.csv"
    result = bench(
        default_server,
        "--model",
        "ssdlite-person",
        "--infer",
        *encoding,
        "--grpc",
        default_server.grpc_address,
        "--shape",
        "image_tensor:0=1,64,64,3",
        "--rate",
        "20",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert f"({(encoding or ['json'])[0]})" in result.stdout.replace("gRPC", "grpc")
    [row] = list(csv.DictReader(out.open()))
    assert row["mode"] == "rate" and int(row["requests"]) >= 5 and row["errors"] == "0"


def test_grpc_errors_are_counted_by_status_code(default_server):
    result = bench(
        default_server,
        "--model",
        "ssdlite-person",
        "--infer",
        "grpc",
        "--grpc",
        default_server.grpc_address,
        "--shape",
        "image_tensor:0=1,64,64,4",
        "--concurrency",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "INVALID_ARGUMENT" in result.stdout


def test_wrong_answers_are_counted_as_errors(default_server):
    # predicting with a model that is not there: every answer is a 404 and is reported, not counted as served
    result = bench(default_server, "--model", "nope", "--images", str(IMAGES / "coffee.png"), "--concurrency", "1")
    assert result.returncode == 0
    assert "HTTP 404" in result.stdout
