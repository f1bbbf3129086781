"""What the examples' `make_video.py` scripts share: the repo's photos, and writing frames as a video with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

IMAGES = Path(__file__).resolve().parent.parent / "tests" / "data" / "images"  # the repo's photos


def write_video(path: Path, frames: list[Image.Image], fps: int) -> Path:
    """`frames` as an H.264 mp4 (MPEG-4 part 2 where PyAV has no libx264), a key frame every second."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = fps
        if codec == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "crf": "20"}
        else:
            stream.codec_context.bit_rate = 2_000_000
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return path
