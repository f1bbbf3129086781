"""Draw results on an image: boxes with class name and confidence, in a colour per class."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

# Ultralytics-like palette: distinct, readable on photos
PALETTE = [
    "#FF3838",
    "#FF9D97",
    "#FF701F",
    "#FFB21D",
    "#CFD231",
    "#48F90A",
    "#92CC17",
    "#3DDB86",
    "#1A9334",
    "#00D4BB",
    "#2C99A8",
    "#00C2FF",
    "#344593",
    "#6473FF",
    "#0018EC",
    "#8438FF",
    "#520085",
    "#CB38FF",
    "#FF95C8",
    "#FF37C7",
]


def annotate(image: Image.Image, results: list[dict]) -> Image.Image:
    """A copy of `image` (RGB) with every result drawn: its box (rotated boxes as their four corners), mask
    outline and visible keypoints, labelled with class name, track id (a stream's) and confidence."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 50)))
    for result in results:
        box = result.get("box")
        if not box:
            continue
        colour = PALETTE[result["class"] % len(PALETTE)]
        if "x3" in box:  # oriented box: a polygon through its corners
            corners = [(box[f"x{i}"], box[f"y{i}"]) for i in range(1, 5)]
            draw.polygon(corners, outline=colour, width=width)
            left_x, top_y = min(x for x, _ in corners), min(y for _, y in corners)
        else:
            draw.rectangle((box["x1"], box["y1"], box["x2"], box["y2"]), outline=colour, width=width)
            left_x, top_y = box["x1"], box["y1"]
        segments = result.get("segments")
        if segments and len(segments["x"]) > 2:
            draw.polygon(list(zip(segments["x"], segments["y"])), outline=colour, width=max(1, width // 2))
        keypoints = result.get("keypoints")
        if keypoints:
            radius = width + 1
            for x, y, visible in zip(keypoints["x"], keypoints["y"], keypoints["visible"]):
                if visible >= 0.5:
                    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        track = f" #{result['track_id']}" if "track_id" in result else ""
        label = f"{result['name']}{track} {result['confidence']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = max(0, top_y - (bottom - top) - 2 * width)
        draw.rectangle((left_x, y, left_x + right - left + 2 * width, y + bottom - top + 2 * width), fill=colour)
        draw.text((left_x + width, y + width - top), label, fill="white", font=font)
    return canvas


def annotated_jpeg(image: Image.Image, results: list[dict], quality: int = 85) -> bytes:
    """`image` with `results` drawn, as JPEG bytes."""
    buffer = io.BytesIO()
    annotate(image, results).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
