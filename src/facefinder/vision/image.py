"""Decoding photos safely: EXIF orientation, a pixel cap against decompression bombs, and errors
that say which file failed and why."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facefinder.errors import ImageError
from facefinder.vision.inference import ImageArray

DEFAULT_MAX_PIXELS = 64_000_000  # about 8000 x 8000; larger files are refused as "too-large"
SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"}

Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, with our own error, before decoding


def decode_image(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageArray:
    """Bytes of a photo -> H x W x 3 RGB uint8, upright per its EXIF orientation.

    Raises ImageError naming ``source`` with reason not-an-image, too-large, truncated or corrupt.
    """
    if not data:
        raise ImageError(source, "not-an-image", "empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(source, "not-an-image", "unrecognised format") from None
    except Exception as exc:
        raise ImageError(source, "corrupt", str(exc)) from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(source, "not-an-image", f"unsupported format {image.format}")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(source, "too-large", f"{width}x{height} exceeds the {max_pixels:,}-pixel cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = image.convert("RGB")
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(source, reason, str(exc)) from None
    except Exception as exc:
        raise ImageError(source, "corrupt", str(exc)) from None
    if min(rgb.size) < 16:
        raise ImageError(source, "not-an-image", f"{rgb.size[0]}x{rgb.size[1]} is too small to hold a face")
    return np.asarray(rgb, dtype=np.uint8)


def read_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageArray:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImageError(str(path), "unreadable", exc.strerror or str(exc)) from None
    return decode_image(data, str(path), max_pixels)


def encode_jpeg(image: ImageArray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
