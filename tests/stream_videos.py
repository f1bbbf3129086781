"""Test videos for streams, made from the repo's images: the astronaut walking across a coffee-cup background."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

from conftest import IMAGES

PERSON_BOX = (0, 0, 400, 512)  # the astronaut in astronaut.png (left two thirds, top to bottom)


def video_codec() -> str:
    """H.264 when this PyAV build has libx264, else MPEG-4 part 2 (both served by GStreamer from an mp4)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def walk_frames(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """`count` RGB frames: the person (4/5 of the height) moving left to right at a steady speed."""
    width, height = size
    background = Image.open(IMAGES / "coffee.png").convert("RGB").resize(size)
    person = Image.open(IMAGES / "astronaut.png").convert("RGB").crop(PERSON_BOX)
    person_height = height * 4 // 5
    person = person.resize((person.width * person_height // person.height, person_height))
    travel = width - person.width
    top = (height - person_height) // 2
    frames = []
    for index in range(count):
        frame = background.copy()
        frame.paste(person, (round(travel * index / max(count - 1, 1)), top))
        frames.append(frame)
    return frames


def make_walk_video(
    path: Path, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (640, 480), b_frames: bool = False
) -> Path:
    """Write the walk to `path` (mp4 or mkv, by its suffix) at `fps`; a key frame every second. `b_frames`: H.264
    as cameras and files often are, with B-frames no other frame refers to (else for low latency, with none)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(video_codec(), rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = fps
        if stream.codec_context.name == "libx264":
            low_latency = {"preset": "ultrafast", "tune": "zerolatency"}
            stream.codec_context.options = {"preset": "veryfast", "bframes": "3"} if b_frames else low_latency
        else:
            stream.codec_context.bit_rate = 2_000_000
        for image in walk_frames(round(seconds * fps), size):
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path


def make_hls(video: Path, folder: Path, segment_seconds: float = 1.0) -> Path:
    """Remux `video` into an HLS playlist `cam.m3u8` (with all its segments) in `folder`; returns the playlist."""
    playlist = folder / "cam.m3u8"
    options = {"hls_time": f"{segment_seconds:g}", "hls_list_size": "0"}
    with av.open(str(video)) as source, av.open(str(playlist), "w", format="hls", options=options) as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # not the demuxer's final empty packet
                packet.stream = stream
                output.mux(packet)
    return playlist
