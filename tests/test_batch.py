"""`kakehashi batch`: sources (folder, glob, list, video), JSONL/CSV/Parquet, annotated images, errors recorded,
resume after SIGKILL with exactly one result per input, progress output, and the same job against a server."""

from __future__ import annotations

import csv
import json
import os
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


def batch(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kakehashi", "batch", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


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
    saved = Image.open(drawn / "astronaut.jpg")
    assert saved.size == (512, 512)
    box = astronaut["results"][0]["box"]  # the box outline is drawn in the first palette colour
    pixel = saved.getpixel((round((box["x1"] + box["x2"]) / 2), round(box["y2"]) - 1))
    assert pixel[0] > 200 and pixel[1] < 100 and pixel[2] < 100
    assert sorted(p.name for p in drawn.iterdir()) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]


def test_same_answers_as_the_predict_command(photos, tmp_path):
    out = tmp_path / "out.jsonl"
    batch(str(photos / "sub" / "deeper"), "--out", str(out), "--conf", "0.5")
    predicted = subprocess.run([sys.executable, "-m", "kakehashi", "predict", str(IMAGES / "astronaut.png"),
                                "--conf", "0.5"], capture_output=True, text=True, timeout=120)
    assert same_detections(lines(out)[0]["results"], json.loads(predicted.stdout)["images"][0]["results"])


def test_glob_and_list_sources_to_csv_and_parquet(photos, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# two photos and one that is gone\n{photos}/sub/coffee.png\nsub/deeper/astronaut.png\n"
                       f"missing.png\n")
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
    assert [r["name"] for r in table] == ["person"] and table[0]["confidence"] > 0.5


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
    assert (drawn / "clip_frame000003.jpg").exists()


def test_sigkill_then_resume_gives_exactly_one_result_per_input(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    data = (IMAGES / "astronaut.png").read_bytes()
    for i in range(120):
        (folder / f"{i:03d}.png").write_bytes(data)
    out = tmp_path / "out.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "kakehashi", "batch", str(folder), "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    job = subprocess.Popen([sys.executable, "-m", "kakehashi", "batch", str(folder), "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_progress_is_logged_when_not_a_terminal(photos, tmp_path, monkeypatch):
    import kakehashi.batch.progress as progress

    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    bar = progress.Progress(total=4, quiet=False)
    for failed in (False, False, True):
        bar.advance(failed)
    assert bar.line().startswith("3/4 inputs done (1 failed), ") and "images/s, ETA" in bar.line()


def test_against_a_running_server(default_server, photos, tmp_path):
    out = tmp_path / "remote.jsonl"
    result = batch(str(photos), "--url", default_server.url, "--out", str(out), "--concurrency", "4")
    assert result.returncode == 1, result.stderr
    local = tmp_path / "local.jsonl"
    batch(str(photos), "--out", str(local))
    remote_records = {r["source"]: r for r in lines(out)}
    for record in lines(local):
        if "error" in record:
            error = remote_records[record["source"]]["error"]
            assert error.startswith("server answered 400: ") and record["error"] in error
        else:
            assert same_detections(remote_records[record["source"]]["results"], record["results"])


def test_bad_arguments(tmp_path):
    assert "no such file or folder" in batch("nowhere/", "--out", str(tmp_path / "o.jsonl")).stderr
    assert "--out must end in" in batch(str(IMAGES), "--out", str(tmp_path / "o.txt")).stderr


def test_pose_and_obb_fields_in_csv(tmp_path):
    from conftest import MODELS

    out = tmp_path / "pose.csv"
    result = batch(str(IMAGES / "astronaut.png"), "--model", str(MODELS / "yolo11n-pose-random-640-dynamic.onnx"),
                   "--conf", "0.0001", "--max-det", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and len(json.loads(rows[0]["keypoints"])["x"]) == 17 and rows[0]["x3"] == ""
    out = tmp_path / "obb.csv"
    batch(str(IMAGES / "astronaut.png"), "--model", str(MODELS / "yolo11n-obb-random-640-dynamic.onnx"),
          "--conf", "0.0001", "--max-det", "1", "--out", str(out))
    [row] = list(csv.DictReader(out.open()))
    assert all(row[k] != "" for k in ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"))
