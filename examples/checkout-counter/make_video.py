"""Make `counter.mp4`: a checkout counter seen from above, cups pushed one after another from the belt (the top of
the picture) down onto the counter (the bottom half), where they stay.

The cups are cut from the repository's `tests/data/images/coffee.png` (each with its saucer); the belt and the
counter are drawn. Run it from anywhere:

    python examples/checkout-counter/make_video.py            # writes examples/checkout-counter/counter.mp4
    python examples/checkout-counter/make_video.py out.mp4    # or another path
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from video import IMAGES, write_video  # noqa: E402

SIZE = (640, 360)  # width, height of the video
FPS = 10
COUNTER_TOP = 170  # the counter's edge (y): above it the belt, below it the counter
CUP_BOX = (100, 0, 480, 360)  # the cup with its saucer in coffee.png
CUP_HEIGHT = 180  # much smaller, and the detector no longer calls it a cup
SLOTS = (36, 245, 455)  # where each cup comes to rest on the counter (left edge, x)
ARRIVALS = (1.0, 3.0, 5.0)  # seconds into the video when each cup starts to slide down
SLIDE_SECONDS = 1.0  # from above the picture to its place on the counter
SECONDS = 7.5  # the video's length


def cup_image() -> Image.Image:
    picture = Image.open(IMAGES / "coffee.png").convert("RGB").crop(CUP_BOX)
    return picture.resize((picture.width * CUP_HEIGHT // picture.height, CUP_HEIGHT))


def counter_background() -> Image.Image:
    """The belt (dark, ribbed) above the counter (light laminate) with its steel edge."""
    width, height = SIZE
    frame = Image.new("RGB", SIZE, (222, 216, 204))
    draw = ImageDraw.Draw(frame)
    draw.rectangle((0, 0, width, COUNTER_TOP), fill=(54, 56, 60))
    for y in range(8, COUNTER_TOP, 16):
        draw.line((0, y, width, y), fill=(66, 68, 72), width=2)
    draw.rectangle((0, COUNTER_TOP - 4, width, COUNTER_TOP + 4), fill=(170, 174, 180))
    return frame


def cup_top(seconds: float, arrival: float) -> int | None:
    """The y of a cup's top edge at `seconds` (None before it appears): it slides from just above the picture
    down to rest on the counter's bottom edge, at a steady speed."""
    if seconds < arrival:
        return None
    start, rest = -CUP_HEIGHT, SIZE[1] - CUP_HEIGHT - 10
    progress = min(1.0, (seconds - arrival) / SLIDE_SECONDS)
    return round(start + (rest - start) * progress)


def counter_frames() -> list[Image.Image]:
    cup = cup_image()
    background = counter_background()
    frames = []
    for index in range(round(SECONDS * FPS)):
        frame = background.copy()
        for x, arrival in zip(SLOTS, ARRIVALS):
            top = cup_top(index / FPS, arrival)
            if top is not None:
                frame.paste(cup, (x, top))
        frames.append(frame)
    return frames


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "counter.mp4"
    write_video(path, counter_frames(), FPS)
    print(f"wrote {path} ({SIZE[0]}x{SIZE[1]}, {FPS} fps)")


if __name__ == "__main__":
    main()
