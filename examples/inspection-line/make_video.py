"""Make `belt.mp4`: a conveyor belt carrying products past the camera, one of them a defect (a cup).

Everything comes from the repository's test images: the cup is cut from `tests/data/images/coffee.png`, the cat
from `chelsea.png`; the cardboard boxes (good products) and the belt are drawn. Run it from anywhere:

    python examples/inspection-line/make_video.py            # writes examples/inspection-line/belt.mp4
    python examples/inspection-line/make_video.py out.mp4    # or another path
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
BELT = (45, 315)  # the belt's top and bottom edges (y)
SPEED = 320  # pixels per second the belt moves, left to right
SPACING = 1.5  # seconds between two products entering the frame
CUP_BOX = (130, 0, 470, 310)  # the cup in coffee.png, with its saucer and a little of the table
CAT_BOX = (0, 0, 451, 300)  # the cat in chelsea.png
PRODUCT_HEIGHT = 240  # smaller, the detector takes the cup seen from above for a toilet

# what the belt carries, in order: "box" (a good product), "cup" (the defect), "cat" (not a defect either)
SEQUENCE = ("box", "cup", "cat", "cup")


def product_image(kind: str) -> Image.Image:
    """The picture of one product, `PRODUCT_HEIGHT` pixels tall."""
    if kind == "box":
        picture = Image.new("RGB", (200, PRODUCT_HEIGHT), (176, 134, 84))
        draw = ImageDraw.Draw(picture)
        draw.rectangle((0, 0, 199, PRODUCT_HEIGHT - 1), outline=(120, 88, 50), width=4)
        draw.rectangle((86, 0, 114, PRODUCT_HEIGHT - 1), fill=(200, 180, 140))  # the tape
        return picture
    source, box = {"cup": ("coffee.png", CUP_BOX), "cat": ("chelsea.png", CAT_BOX)}[kind]
    picture = Image.open(IMAGES / source).convert("RGB").crop(box)
    return picture.resize((picture.width * PRODUCT_HEIGHT // picture.height, PRODUCT_HEIGHT))


def belt_background(offset: int) -> Image.Image:
    """The belt, its slats moved `offset` pixels to the right, between two dark machine guards."""
    width, height = SIZE
    frame = Image.new("RGB", SIZE, (58, 60, 66))
    draw = ImageDraw.Draw(frame)
    top, bottom = BELT
    draw.rectangle((0, top, width, bottom), fill=(128, 130, 126))
    for x in range(offset % 48 - 48, width, 48):
        draw.line((x, top, x, bottom), fill=(112, 114, 110), width=3)
    draw.rectangle((0, top - 6, width, top), fill=(200, 170, 40))  # the guards' yellow edges
    draw.rectangle((0, bottom, width, bottom + 6), fill=(200, 170, 40))
    return frame


def belt_frames(sequence: tuple[str, ...] = SEQUENCE) -> list[Image.Image]:
    """Every frame: each product enters at the left `SPACING` seconds after the one before and leaves at the right."""
    pictures = [product_image(kind) for kind in sequence]
    width = SIZE[0]
    top = (BELT[0] + BELT[1] - PRODUCT_HEIGHT) // 2
    last_gone = (len(sequence) - 1) * SPACING + (width + max(p.width for p in pictures)) / SPEED
    frames = []
    for index in range(round(last_gone * FPS) + 1):
        seconds = index / FPS
        frame = belt_background(round(seconds * SPEED))
        for number, picture in enumerate(pictures):
            x = round((seconds - number * SPACING) * SPEED) - picture.width
            if -picture.width < x < width:
                frame.paste(picture, (x, top))
        frames.append(frame)
    return frames


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "belt.mp4"
    write_video(path, belt_frames(), FPS)
    print(f"wrote {path} ({SIZE[0]}x{SIZE[1]}, {FPS} fps)")


if __name__ == "__main__":
    main()
