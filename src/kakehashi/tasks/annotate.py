"""Draw results on an image: boxes with class name and confidence, in a colour per class."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

# Ultralytics-like palette: distinct, readable on photos
PALETTE = ["#FF3838", "#FF9D97", "#FF701F", "#FFB21D", "#CFD231", "#48F90A", "#92CC17", "#3DDB86", "#1A9334",
           "#00D4BB", "#2C99A8", "#00C2FF", "#344593", "#6473FF", "#0018EC", "#8438FF", "#520085", "#CB38FF",
           "#FF95C8", "#FF37C7"]


def annotate(image: Image.Image, results: list[dict]) -> Image.Image:
    """A copy of `image` (RGB) with every result that has a box drawn and labelled."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 50)))
    for result in results:
        box = result.get("box")
        if not box:
            continue
        colour = PALETTE[result["class"] % len(PALETTE)]
        corners = (box["x1"], box["y1"], box["x2"], box["y2"])
        draw.rectangle(corners, outline=colour, width=width)
        label = f"{result['name']} {result['confidence']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = max(0, box["y1"] - (bottom - top) - 2 * width)
        draw.rectangle((box["x1"], y, box["x1"] + right - left + 2 * width, y + bottom - top + 2 * width), fill=colour)
        draw.text((box["x1"] + width, y + width - top), label, fill="white", font=font)
    return canvas
