"""Decoding photos safely: EXIF orientation, a pixel cap against decompression bombs, a memory
budget for decoding, and errors that say which file failed and why.

``decode_photo`` (ingest, search, server probes, privacy photos) decodes at a bounded size: a JPEG is
reduced while it is decoded (DCT scaling), other formats are decoded whole only when that fits
``FULL_DECODE_BYTES`` and then reduced, so a 62 KB 7999x7999 PNG costs a fraction of a second and tens of MB instead of
seconds and gigabytes. Faces are found relative to the photo's size (the detector's tiles scale with
it), so a photo reduced to ``WORK_PIXELS`` loses nothing for detection; boxes are mapped back to the
photo's own pixels (``Decoded.scale``).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facefinder.errors import ImageError
from facefinder.vision.inference import ImageArray

DEFAULT_MAX_PIXELS = 64_000_000  # about 8000 x 8000; larger files are refused as "too-large"
MAX_PHOTO_BYTES = 100 * 1024 * 1024  # a photo file over this is refused as "too-large" before it is read
WORK_PIXELS = 4096 * 4096  # photos are analysed at most about this size (decode_photo)
FULL_DECODE_BYTES = 128 * 1024 * 1024  # largest decode buffer for formats that cannot be reduced while decoding
SUPPORTED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"}
REDUCIBLE_FORMATS = {"JPEG", "MPO"}  # decoded at 1/2, 1/4 or 1/8 scale on request (PIL draft)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # PIL's own buffers

Image.MAX_IMAGE_PIXELS = None  # we enforce our own cap, with our own error, before decoding


@dataclass
class Decoded:
    """A photo decoded for analysis: ``image`` may be smaller than the photo (width x height)."""

    image: ImageArray  # H x W x 3 RGB uint8, upright
    width: int  # the upright photo's own size, in pixels
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """Photo pixels per analysed pixel, along x and y (1.0 when the photo was not reduced)."""
        height, width = self.image.shape[:2]
        return self.width / width, self.height / height


def decode_photo(
    data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS, work_pixels: int = WORK_PIXELS
) -> Decoded:
    """Bytes of a photo -> upright RGB of at most about ``work_pixels``, within the decode budget.

    Raises ImageError naming ``source`` with reason not-an-image, too-large, truncated or corrupt.
    """
    image = _open(data, source, max_pixels)
    width, height = image.size
    factor = max(1, math.ceil(math.sqrt(width * height / work_pixels)))
    if image.format in REDUCIBLE_FORMATS and factor > 1:
        image.draft("RGB", (width // factor, height // factor))  # decodes at the next DCT scale above
    else:
        _check_budget(image, source)
    holder = [image]
    del image  # _load frees the full-size buffer once it is reduced: no other reference may keep it
    array, turned = _load(holder, source, reduce_to=work_pixels)
    return Decoded(array, *((height, width) if turned else (width, height)))


def decode_image(data: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageArray:
    """Bytes of a photo -> H x W x 3 RGB uint8 at full size, upright per its EXIF orientation.

    Raises ImageError naming ``source`` with reason not-an-image, too-large, truncated or corrupt.
    Every untrusted photo goes through ``decode_photo``, which bounds the memory a decode may take;
    this is for our own small images (112x112 probe thumbnails), tools and tests.
    """
    return _load([_open(data, source, max_pixels)], source)[0]


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """The photo's header, checked: a supported format under the pixel cap (nothing decoded yet)."""
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
    return image


def _check_budget(image: Image.Image, source: str) -> None:
    """Refuse, before decoding, a photo whose decoded buffer alone would exceed the budget."""
    width, height = image.size
    needed = width * height * _BYTES_PER_PIXEL.get(image.mode, 4)
    if needed > FULL_DECODE_BYTES:
        raise ImageError(
            source,
            "too-large",
            f"{width}x{height} {image.format} ({image.mode}) needs {needed / 2**20:,.0f} MB to decode, "
            f"over the {FULL_DECODE_BYTES / 2**20:,.0f} MB budget (only JPEG is reduced while decoding)",
        )


def _load(holder: list[Image.Image], source: str, reduce_to: int | None = None) -> tuple[ImageArray, bool]:
    """Decode, reduce to about ``reduce_to`` pixels (None: keep the size), apply EXIF -> (RGB array,
    whether the EXIF orientation turned it a quarter). The orientation is read after decoding: a PNG's
    EXIF may follow its pixels, and reading it first would decode the whole photo.

    The image comes in a list that this empties, so that the full-size buffer is freed as soon as it
    is reduced rather than held by the caller's frame until the end (it can be 128 MB).
    """
    image = holder.pop()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            if reduce_to and image.width * image.height > reduce_to:
                image = _reduce(image, math.ceil(math.sqrt(image.width * image.height / reduce_to)))
            before = image.size
            ImageOps.exif_transpose(image, in_place=True)
            turned = image.size != before
            if min(image.size) < 16:
                raise ImageError(source, "not-an-image", f"{image.size[0]}x{image.size[1]} is too small to hold a face")
            return _rgb_array(image), turned
    except ImageError:
        raise
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(source, reason, str(exc)) from None
    except Exception as exc:
        raise ImageError(source, "corrupt", str(exc)) from None


def _rgb_array(image: Image.Image) -> ImageArray:
    """H x W x 3 uint8. Grey and palette photos go through numpy: PIL's RGB is 4 bytes a pixel, and
    converting first would hold that as well as the array (a 4000x4000 grey bomb: 64 MB more)."""
    if image.mode == "L":
        return np.repeat(np.asarray(image)[:, :, None], 3, axis=2)
    if image.mode == "P" and image.palette is not None and image.palette.mode == "RGB":
        palette = np.zeros((256, 3), dtype=np.uint8)
        colours = np.asarray(image.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)[:256]
        palette[: len(colours)] = colours
        return palette[np.asarray(image)]
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Shrink by an integer factor without a full-size copy: box-average where PIL can, else nearest
    pixel (palette and bilevel photos, whose colours an average would not keep)."""
    if image.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return image.reduce(factor)
    return image.resize((max(1, image.width // factor), max(1, image.height // factor)), Image.Resampling.NEAREST)


def read_photo_bytes(path: str | os.PathLike, max_bytes: int = MAX_PHOTO_BYTES) -> bytes:
    """A photo file's bytes, refused as "too-large" before reading when it is over ``max_bytes``
    (checked on the open file, and again while reading, so a file that grows cannot slip past)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise ImageError(str(path), "too-large", f"{size:,} bytes exceeds the {max_bytes:,}-byte cap")
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(str(path), "unreadable", exc.strerror or str(exc)) from None
    if len(data) > max_bytes:
        raise ImageError(str(path), "too-large", f"over the {max_bytes:,}-byte cap (the file grew while read)")
    return data


def read_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageArray:
    """A small trusted photo file at full size (``decode_image`` on ``read_photo_bytes``)."""
    return decode_image(read_photo_bytes(path), str(path), max_pixels)


def encode_jpeg(image: ImageArray, quality: int = 85) -> bytes:
    """An RGB uint8 image as JPEG bytes (thumbnails of aligned faces, tests)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
