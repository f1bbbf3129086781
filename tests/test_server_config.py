"""`serve --config FILE` and `--stream NAME=URL[,key=value]`: what they accept, where relative paths point, and the
errors a user gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from kakehashi.errors import InvalidInput
from kakehashi.events.config import JsonlConfig
from kakehashi.streams.config import load_server_config, stream_from_flag

CONFIG = """
streams:
  - {name: belt, url: videos/belt.mp4, loop: true}
  - {name: door, url: "rtsp://user:secret@cam.local:8554/door", params: {conf: 0.4, classes: [0, 2]}}
events:
  outbox: state/events.db
  sinks:
    audit: {type: jsonl, path: logs/events.jsonl}
"""


def test_relative_paths_are_from_the_config_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "line.yaml").write_text(CONFIG)
    config = load_server_config(folder / "line.yaml")
    belt, door = config.streams
    assert belt.url == str(folder / "videos" / "belt.mp4") and belt.loop
    assert door.url == "rtsp://user:secret@cam.local:8554/door"  # a URL is left as it is
    assert config.events.outbox == folder / "state" / "events.db"
    sink = config.events.sinks["audit"]
    assert isinstance(sink, JsonlConfig) and sink.path == folder / "logs" / "events.jsonl"
    assert door.request_values() == {"conf": ["0.4"], "classes": ["0", "2"]}
    assert door.redacted_url() == "rtsp://user:***@cam.local:8554/door"


@pytest.mark.parametrize(
    "text, message",
    [
        ("streams: [{name: a, url: x.mp4}, {name: a, url: y.mp4}]", "stream names must be unique; repeated: a"),
        ("streams: [{name: a, url: x.mp4, fps: 0}]", "fps"),
        ("streams: [{name: a, url: x.mp4, colour: red}]", "colour"),
        ("streams: [{name: 'a b', url: x.mp4}]", "name"),
        ("streams: [{name: a, url: x.mp4, rules: [{kind: presence, name: r, zone: belt}]}]", "belt"),
        ("events: {sinks: {s: {type: carrier-pigeon}}}", "carrier-pigeon"),
        ("streams: [unclosed", "cannot be read as YAML"),
        ("streams: [{name: a, url: 'rtsp://cam.local/a', realtime: false}]", "a live source (rtsp://cam.local/a)"),
        ("streams: [{name: a, url: /dev/video0, realtime: false}]", "realtime: false is for video files"),
        ("streams: [{name: a, url: 'udp://239.0.0.1:5000', realtime: false}]", "a live source (udp://239.0.0.1:5000)"),
    ],
)
def test_a_bad_config_file_says_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as raised:
        load_server_config(path)
    assert str(path) in raised.value.message and message in raised.value.message


def test_stream_flag_takes_fields_and_predict_parameters() -> None:
    stream = stream_from_flag("gate=rtsp://10.0.0.5/stream?channel=1,fps=5,model=yolox-nano-coco,conf=0.5,loop=true")
    assert (stream.name, stream.url, stream.fps, stream.model, stream.loop) == (
        "gate",
        "rtsp://10.0.0.5/stream?channel=1",
        5,
        "yolox-nano-coco",
        True,
    )
    assert stream.request_values() == {"conf": ["0.5"]}
    assert not stream_from_flag("shift=recording.mp4,realtime=false").realtime
    assert not stream_from_flag("shm=/dev/shm/recording.mp4,realtime=false").realtime  # a file, though under /dev
    for bad in ("no-url", "gate=rtsp://x,fps=fast"):
        with pytest.raises(InvalidInput, match="--stream"):
            stream_from_flag(bad)
