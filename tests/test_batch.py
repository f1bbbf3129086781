"""`kakehashi batch`: sources (folder, glob, list, video), JSONL/CSV/Parquet, annotated images, errors recorded,
resume after SIGKILL with exactly one result per input, progress output, and the same job against a server."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import IMAGES, same_detections
from conftest import YOLO11 as YOLO11_PATH


@pytest.fixture(scope="module", autouse=True)
def bundled(tmp_path_factory) -> Path:
    """The bundled person detector with ONNX Runtime and no batching: what these jobs run when they name no model
    (seconds less per job than timing both runtimes and every batch size at each start, which is not tested here)."""
    from conftest import QUICK_YAML
    from kakehashi.settings import default_model_path

    folder = tmp_path_factory.mktemp("bundled") / "ssdlite-person"
    shutil.copytree(default_model_path() / "ssdlite-person", folder)
    (folder / "model.yaml").write_text((folder / "model.yaml").read_text() + "\n" + QUICK_YAML)
    BUNDLED[:] = ["--model", str(folder)]
    return folder


BUNDLED: list[str] = []


def batch(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    model = [] if "--model" in args or "--url" in args else BUNDLED
    return subprocess.run(
        [sys.executable, "-m", "kakehashi", "batch", *args, *model],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder tree of the test photos plus a broken file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    for i, image in enumerate(sorted(IMAGES.glob("*.png"))):
        (root / ("sub/deeper" if i == 0 else "sub") / image.name).write_bytes(image.read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 12-frame MPEG-4 video: the astronaut on frames 0-5, plain grey on 6-11."""
    import av

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    astronaut = np.asarray(Image.open(IMAGES / "astronaut.png").convert("RGB").resize((320, 320)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=6)
        stream.width = stream.height = 320
        stream.pix_fmt = "yuv420p"
        for index in range(12):
            pixels = astronaut if index < 6 else np.full_like(astronaut, 128)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_folder_to_jsonl_with_an_error_line_and_annotated_images(photos, tmp_path):
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    result = batch(str(photos), "--out", str(out), "--save-images", str(drawn))
    assert result.returncode == 1, result.stderr  # one input failed
    assert "3 succeeded, 1 failed, 0 already done" in result.stderr
    records = {Path(r["source"]).name: r for r in lines(out)}
    assert set(records) == {"astronaut.png", "chelsea.png", "coffee.png", "broken.jpg"}
    assert "starts like a JPEG image but cannot be read" in records["broken.jpg"]["error"]
    astronaut = records["astronaut.png"]
    assert astronaut["shape"] == [512, 512] and astronaut["results"][0]["name"] == "person"
    assert set(astronaut["speed"]) == {"preprocess", "queue", "inference", "postprocess"}
    assert records["coffee.png"]["results"] == []
    saved = Image.open(astronaut["annotated"])
    assert Path(astronaut["annotated"]).parent == drawn and saved.size == (512, 512)
    box = astronaut["results"][0]["box"]  # the box outline is drawn in the first palette colour
    pixel = saved.getpixel((round((box["x1"] + box["x2"]) / 2), round(box["y2"]) - 1))
    assert pixel[0] > 200 and pixel[1] < 100 and pixel[2] < 100
    assert sorted(p.name.split("-")[0] for p in drawn.iterdir()) == ["astronaut", "chelsea", "coffee"]
    assert "annotated" not in records["broken.jpg"]


def test_same_answers_as_the_predict_command(photos, tmp_path):
    out = tmp_path / "out.jsonl"
    batch(str(photos / "sub" / "deeper"), "--out", str(out), "--conf", "0.5")
    predicted = subprocess.run(
        [sys.executable, "-m", "kakehashi", "predict", str(IMAGES / "astronaut.png"), "--conf", "0.5", *BUNDLED],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same_detections(lines(out)[0]["results"], json.loads(predicted.stdout)["images"][0]["results"])


def test_glob_and_list_sources_to_csv_and_parquet(photos, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(
        f"# two photos and one that is gone\n{photos}/sub/coffee.png\nsub/deeper/astronaut.png\nmissing.png\n"
    )
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "astronaut.png").write_bytes((IMAGES / "astronaut.png").read_bytes())
    out = tmp_path / "out.csv"
    result = batch(str(listing), f"{photos}/**/chel*.png", "--out", str(out), "--quiet")
    assert result.returncode == 1 and result.stdout == ""
    rows = list(csv.DictReader(out.open()))
    people = [r for r in rows if r["name"] == "person"]
    assert len(people) == 1 and people[0]["source"].endswith("astronaut.png") and float(people[0]["x2"]) > 300
    assert [r["source"] for r in rows if r["error"]] == [str(tmp_path / "missing.png")]
    assert len(lines(tmp_path / "out.csv.journal.jsonl")) == 4
    parquet = tmp_path / "out.parquet"
    assert batch(f"{photos}/**/*.png", "--out", str(parquet)).returncode == 0
    table = pq.read_table(parquet).to_pylist()
    found = [r for r in table if r["name"] is not None]
    assert [r["name"] for r in found] == ["person"] and found[0]["confidence"] > 0.5
    assert len(table) == 3 and all(r["error"] is None for r in table)  # the photos with nothing found have a row


def test_video_every_nth_frame_with_index_and_timestamp(video, tmp_path):
    out = tmp_path / "frames.jsonl"
    drawn = tmp_path / "drawn"
    result = batch(str(video), "--every", "3", "--out", str(out), "--save-images", str(drawn))
    assert result.returncode == 0, result.stderr
    records = sorted(lines(out), key=lambda r: r["frame"])
    assert [r["frame"] for r in records] == [0, 3, 6, 9]
    assert [r["timestamp"] for r in records] == pytest.approx([0, 0.5, 1.0, 1.5])
    assert all(r["shape"] == [320, 320] for r in records)
    assert [bool(r["results"]) for r in records] == [True, True, False, False]  # the astronaut, then grey
    assert [Path(r["annotated"]).name.split("_frame")[1] for r in records] == [
        "000000.jpg",
        "000003.jpg",
        "000006.jpg",
        "000009.jpg",
    ]
    assert all(Path(r["annotated"]).exists() and Path(r["annotated"]).parent == drawn for r in records)


def test_sigkill_then_resume_gives_exactly_one_result_per_input(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    data = (IMAGES / "astronaut.png").read_bytes()
    for i in range(120):
        (folder / f"{i:03d}.png").write_bytes(data)
    out = tmp_path / "out.jsonl"
    job = subprocess.Popen(
        [sys.executable, "-m", "kakehashi", "batch", str(folder), "--out", str(out), *BUNDLED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not out.exists() or len(out.read_bytes().splitlines()) < 10:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)  # a power cut: no chance to flush or clean up
    job.wait()
    with out.open("ab") as handle:
        handle.write(b'{"key": "torn')  # and a line cut short by it
    partial = len(out.read_bytes().splitlines()) - 1
    assert 10 <= partial < 120

    result = batch(str(folder), "--out", str(out))
    assert result.returncode == 2 and "--resume" in result.stderr  # refuses to overwrite silently
    result = batch(str(folder), "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{120 - partial} succeeded, 0 failed, {partial} already done" in result.stderr
    records = lines(out)
    assert sorted(r["source"] for r in records) == sorted(str(p) for p in folder.iterdir())
    assert all(r["results"][0]["name"] == "person" for r in records)


def test_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        (folder / f"{i:03d}.png").write_bytes((IMAGES / "coffee.png").read_bytes())
    out = tmp_path / "out.jsonl"
    job = subprocess.Popen(
        [sys.executable, "-m", "kakehashi", "batch", str(folder), "--out", str(out), *BUNDLED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not out.exists() or len(out.read_bytes().splitlines()) < 5:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 130 and "interrupted: run again with --resume" in stderr
    assert len(lines(out)) < 200  # every line complete
    assert batch(str(folder), "--out", str(out), "--resume", "--quiet").returncode == 0
    assert len(lines(out)) == 200


def test_progress_is_logged_when_not_a_terminal(monkeypatch, caplog):
    import kakehashi.batch.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    caplog.set_level("INFO", logger="kakehashi.batch")
    bar = progress.Progress(total=5, quiet=False)
    bar.skip()  # done by an earlier run: out of the total and the ETA
    for failed in (False, False, True):
        bar.advance(failed)
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 3 and logged[-1].startswith("3/4 inputs done (1 failed), ") and "images/s, ETA" in logged[-1]
    caplog.clear()
    quiet = progress.Progress(total=2, quiet=True)
    quiet.advance(False)
    assert caplog.records == []


def test_against_a_running_server(serve, bundled, photos, tmp_path):
    server = serve(bundled)  # the model the local job runs: one runtime and precision on both sides
    out = tmp_path / "remote.jsonl"
    result = batch(str(photos), "--url", server.url, "--out", str(out), "--concurrency", "4")
    assert result.returncode == 1, result.stderr
    local = tmp_path / "local.jsonl"
    batch(str(photos), "--out", str(local))
    remote_records = {r["source"]: r for r in lines(out)}
    found = 0
    for record in lines(local):
        if "error" in record:
            error = remote_records[record["source"]]["error"]
            assert error.startswith("server answered 400: ") and record["error"] in error
        elif record["results"]:
            assert same_detections(remote_records[record["source"]]["results"], record["results"])
            found += 1
        else:
            assert remote_records[record["source"]]["results"] == []
    assert found == 1  # the astronaut: one photo's detections are compared, not only empty answers


def test_bad_arguments(tmp_path):
    assert "no such file or folder" in batch("nowhere/", "--out", str(tmp_path / "o.jsonl")).stderr
    assert "--out must end in" in batch(str(IMAGES), "--out", str(tmp_path / "o.txt")).stderr


def _quick(model: str, root: Path) -> list[str]:
    """`--model REPOSITORY --name M` for a test export loaded without timing runtimes or batch sizes (what
    these tests check is the output, not the runtime choice)."""
    from conftest import MODELS, quick_model

    folder = quick_model(MODELS / f"{model}.onnx", root)
    return ["--model", str(folder.parent), "--name", folder.name]


def test_pose_and_obb_fields_in_csv(tmp_path):
    out = tmp_path / "pose.csv"
    result = batch(
        str(IMAGES / "astronaut.png"),
        *_quick("yolo11n-pose-random-640-dynamic", tmp_path / "pose"),
        "--conf",
        "0.0001",
        "--max-det",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and len(json.loads(rows[0]["keypoints"])["x"]) == 17 and rows[0]["x3"] == ""
    out = tmp_path / "obb.csv"
    batch(
        str(IMAGES / "astronaut.png"),
        *_quick("yolo11n-obb-random-640-dynamic", tmp_path / "obb"),
        "--conf",
        "0.0001",
        "--max-det",
        "1",
        "--out",
        str(out),
    )
    [row] = list(csv.DictReader(out.open()))
    assert all(row[k] != "" for k in ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"))


def test_drawn_copies_of_inputs_named_alike_never_overwrite_each_other(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "0001.png").write_bytes((IMAGES / "astronaut.png").read_bytes())
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    assert batch(str(tmp_path / "in"), "--out", str(out), "--save-images", str(drawn)).returncode == 0
    saved = sorted(r["annotated"] for r in lines(out))
    assert len(set(saved)) == 2 and sorted(str(p) for p in drawn.iterdir()) == saved


def test_every_task_can_be_drawn(tmp_path):
    for model in (
        "yolo11n-obb-random-640-dynamic",
        "yolo11n-pose-random-640-dynamic",
        "yolo26n-seg-random-640-e2e-dynamic",
    ):
        out, drawn = tmp_path / f"{model}.jsonl", tmp_path / model
        result = batch(
            str(IMAGES / "astronaut.png"),
            *_quick(model, tmp_path / "repo" / model),
            "--conf",
            "0.0001",
            "--max-det",
            "3",
            "--out",
            str(out),
            "--save-images",
            str(drawn),
        )
        assert result.returncode == 0, result.stderr
        [record] = lines(out)
        assert len(record["results"]) == 3 and Image.open(record["annotated"]).size == (512, 512)


def test_resume_counts_and_reports_earlier_failures_and_keys_paths_however_typed(photos, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    assert batch(str(photos), "--out", str(out)).returncode == 1  # broken.jpg
    monkeypatch.chdir(photos.parent)
    result = batch(f"./{photos.name}", "--out", str(out), "--resume")  # the same folder, typed differently
    assert result.returncode == 1, result.stderr  # the job as a whole still has a failed input
    assert "0 succeeded, 0 failed, 4 already done (1 of them failed)" in result.stderr
    assert len(lines(out)) == 4


def test_quiet_prints_only_the_summary(photos, tmp_path):
    result = batch(str(photos / "sub"), "--out", str(tmp_path / "out.jsonl"), "--quiet")
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.splitlines() == [next(line for line in result.stderr.splitlines() if "succeeded" in line)]


def test_a_progress_bar_on_a_terminal(photos, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    job = subprocess.run(
        [
            sys.executable,
            "-m",
            "kakehashi",
            "batch",
            str(photos / "sub"),
            "--out",
            str(tmp_path / "out.jsonl"),
            *BUNDLED,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        timeout=300,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert job.returncode == 0
    text = shown.decode(errors="replace")
    assert "3/3" in text and "img/s" in text and "100%" in text  # tqdm's bar: done/total, rate, percentage


def test_a_failure_of_any_kind_fails_only_its_input(tmp_path):
    """Whatever a predictor raises, that input gets an error line and the job goes on."""
    import asyncio

    from kakehashi.batch.journal import Journal
    from kakehashi.batch.progress import Progress
    from kakehashi.batch.runner import run_job
    from kakehashi.batch.sources import items

    class Flaky:
        async def predict(self, data):
            if data == b"bad":
                raise ValueError("an unexpected kind of failure")
            return {"shape": [1, 1], "results": [], "speed": {}}

    for name, body in (("a.png", b"good"), ("b.png", b"bad"), ("c.png", b"good")):
        (tmp_path / name).write_bytes(body)
    journal = tmp_path / "out.jsonl"
    summary = asyncio.run(
        run_job(Flaky(), items([str(tmp_path / "*.png")]), Journal(journal, resume=False), 2, Progress(3, quiet=True))
    )
    assert (summary.succeeded, summary.failed) == (2, 1)
    errors = {Path(r["source"]).name: r.get("error") for r in lines(journal)}
    assert errors == {"a.png": None, "b.png": "ValueError: an unexpected kind of failure", "c.png": None}


def test_a_repository_model_in_process_runs_full_batches(tmp_path):
    """`--model REPOSITORY --name M`; concurrent inputs reach the batcher together and run in batches."""
    from click.testing import CliRunner
    from prometheus_client import REGISTRY

    from conftest import QUICK_YAML, YOLO11
    from kakehashi.batch.command import batch as batch_command

    for name in ("batched", "other"):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        (tmp_path / "repo" / name / "1" / "model.onnx").symlink_to(YOLO11.resolve())
    (tmp_path / "repo" / "batched" / "model.yaml").write_text(  # one runtime, one run at a time: batches fill
        "backend: onnxruntime\nthreads: 1\nruns_per_instance: 1\n"
        "batching: {max_batch_size: 4, preferred_batch_size: 4, max_queue_delay_ms: 100}\n"
    )
    (tmp_path / "repo" / "other" / "model.yaml").write_text(QUICK_YAML)
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"{i:02d}.png").write_bytes((IMAGES / "coffee.png").read_bytes())
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        batch_command,
        [str(tmp_path / "in"), "--model", str(tmp_path / "repo"), "--name", "batched", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert len(lines(out)) == 12

    def executions(size: int) -> float:
        labels = {"model": "batched", "version": "1", "batch_size": str(size)}
        return REGISTRY.get_sample_value("kakehashi_batch_executions_total", labels) or 0.0

    assert sum(size * executions(size) for size in range(1, 5)) == 12 and executions(4) >= 2


def test_against_a_server_keeps_several_requests_in_flight(serve, tmp_path):
    # one single-thread instance (two runs at a time), no batching: requests sent together must wait in its queue
    (tmp_path / "repo" / "slow" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "slow" / "1" / "model.onnx").symlink_to(YOLO11_PATH.resolve())
    (tmp_path / "repo" / "slow" / "model.yaml").write_text(
        "input: {size: [1280, 1280]}\nbatching: {max_batch_size: 1}\nbackend: onnxruntime\nthreads: 1\n"
    )
    server = serve(tmp_path / "repo")
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"{i:02d}.png").write_bytes((IMAGES / "coffee.png").read_bytes())
    result = batch(
        str(tmp_path / "in"),
        "--url",
        server.url,
        "--model",
        "slow",
        "--concurrency",
        "8",
        "--out",
        str(tmp_path / "out.jsonl"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    stats = server.client.get("/v2/models/slow/stats").json()["model_stats"][0]["inference_stats"]
    assert stats["queue"]["count"] == stats["compute_infer"]["count"] == 12
    # one at a time, a request would hardly wait (well under 1 % of its inference); eight at a time on two runs,
    # requests wait for others' inferences
    assert stats["queue"]["ns"] > stats["compute_infer"]["ns"] / 4, stats
