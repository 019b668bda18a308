"""Decode one image file into the canonical form: a square uint8 grayscale array.

Ingest (and later, prediction) call `decode_canonical` on the raw bytes of a file. It
never trusts the file: the pixel count is read from the header and checked *before* the
pixels are decoded (a 40-byte PNG can claim to be 100,000 x 100,000 pixels), truncated
and undecodable files raise `BadImage` with a reason a person can act on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# Suffixes ingest treats as images; anything else in a class folder is a stray file.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
CANONICAL_MODE = "L"


class BadImage(ValueError):
    """The bytes are not a usable image; str(err) is the reason, without the file name."""


@dataclass(frozen=True)
class DecodedImage:
    """Canonical pixels plus what the original file looked like."""

    pixels: np.ndarray  # uint8 (size, size)
    width: int  # of the original image
    height: int
    mode: str  # PIL mode of the original image
    converted: bool  # True when resized or converted to grayscale


def decode_canonical(data: bytes, size: int, max_pixels: int) -> DecodedImage:
    """Decode `data` into a (size, size) mode "L" array.

    Raises:
        BadImage: empty, not an image, too many pixels, truncated or undecodable.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        # PIL's own bound (Image.MAX_IMAGE_PIXELS) only warns, and errors at twice it; ours is
        # stricter and checked below, before any pixel is decoded.
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not an image (PIL cannot identify the format)") from None
    except Image.DecompressionBombError as err:
        raise BadImage(f"decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"cannot read the image header: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            f"{width}x{height} = {width * height} pixels exceeds ingest.max_image_pixels="
            f"{max_pixels} (possible decompression bomb); not decoded"
        )
    mode = image.mode
    try:
        image.load()  # raises on truncated or corrupt data (LOAD_TRUNCATED_IMAGES stays False)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImage(f"truncated or corrupt image data: {err}") from None
    converted = mode != CANONICAL_MODE or image.size != (size, size)
    canonical = to_canonical(image, size) if converted else image
    return DecodedImage(np.asarray(canonical, dtype=np.uint8), width, height, mode, converted)


def to_canonical(image: Image.Image, size: int) -> Image.Image:
    """Grayscale, then resize to size x size (aspect ratio not kept: FER faces are square)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Flatten transparency onto white instead of letting it turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != CANONICAL_MODE:
        image = image.convert(CANONICAL_MODE)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def canonical_from_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize an already grayscale uint8 array (e.g. a fer2013.csv row) to (size, size)."""
    if pixels.shape == (size, size):
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))  # 2-D uint8 -> "L"
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_payload(payload: bytes | str, size: int, max_pixels: int) -> DecodedImage | str:
    """`decode_canonical` for a worker process: a failure comes back as its reason string.

    A `str` payload is a reason the file could not even be read; it is passed through.
    """
    if isinstance(payload, str):
        return payload
    try:
        return decode_canonical(payload, size, max_pixels)
    except BadImage as err:
        return str(err)
