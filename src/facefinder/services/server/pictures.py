"""Pictures the case records show: a source photo with the matched face boxed, and the grey
placeholder that stands in for a face that was erased or is withheld."""

from __future__ import annotations

import functools
import io
from datetime import datetime

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facefinder.vision.image import Decoded, encode_jpeg

PHOTO_MAX_SIDE = 1600  # source photos are shown at most this large...
PHOTO_MIN_SIDE = 480  # ...and small ones enlarged to this, so that the box stays a thin outline
# A shown photo is decoded at most this large: reduced by ceil(sqrt(pixels / this)), never below
# PHOTO_MAX_SIDE on its longest side (ceil(x / 2) <= x), so it is only ever scaled down to be shown.
SHOWN_WORK_PIXELS = (2 * PHOTO_MAX_SIDE) ** 2
PLACEHOLDER_SIDE = 112  # as large as the face thumbnails it stands in for


def erased_lines(at: datetime | None) -> tuple[str, ...]:
    return ("erased on", f"{at:%Y-%m-%d}") if at else ("erased",)


@functools.lru_cache(maxsize=128)
def placeholder_jpeg(*lines: str) -> bytes:
    """A plain grey JPEG with a few words on it, shown in a case record in place of an erased face."""
    image = Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE), (226, 226, 226))
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=14)
    except (TypeError, ImportError, OSError):  # no FreeType: the small bitmap font
        font = ImageFont.load_default()
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    step = max((b[3] - b[1] for b in boxes), default=0) + 6
    y = (PLACEHOLDER_SIDE - step * len(lines)) / 2
    for line, box in zip(lines, boxes):
        draw.text(((PLACEHOLDER_SIDE - (box[2] - box[0])) / 2 - box[0], y - box[1]), line, fill=(80, 80, 80), font=font)
        y += step
    return encode_jpeg(np.asarray(image))


def box_in(photo: Decoded, box: list[float]) -> list[float]:
    """A box in the photo's own pixels (as stored) -> in the pixels of ``photo.image``, which may be
    reduced: the candidate's photo is decoded only as large as it is shown."""
    sx, sy = photo.scale
    return [float(v) / s for v, s in zip(box, (sx, sy, sx, sy))]


def boxed_jpeg(
    pixels: np.ndarray, box: list[float], max_side: int = PHOTO_MAX_SIDE, min_side: int = PHOTO_MIN_SIDE
) -> bytes:
    """A photo with one face outlined, scaled down to ``max_side`` (or small ones up to ``min_side``)."""
    image = Image.fromarray(pixels)
    longest = max(image.size)
    scale = max_side / longest if longest > max_side else max(1.0, min_side / longest)
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    draw.rectangle([x1 - width, y1 - width, x2 + width, y2 + width], outline=(255, 255, 255), width=width + 2)
    draw.rectangle([x1, y1, x2, y2], outline=(234, 88, 12), width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()
