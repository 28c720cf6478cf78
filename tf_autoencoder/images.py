"""Image files (their headers, checked before decoding) and image grids as PNG files."""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from .config import MAX_PIXELS
from .files import write_bytes_atomic
from .errors import UsageError
from .memory import check_fits

LARGE_DECODE = 2**28  # bytes: a decode this large is checked against the free memory
# libjpeg's own line for a truncated file, written to stderr before our message says so.
LIBJPEG_NOTE = r"(Input file read error|Premature end of JPEG file)"


# Pillow's modes whose images the preparation (preparation.py) makes grey: 1 channel;
# every other mode gives 3 (alpha is composited away, a palette looked up).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# What the preparation decodes: Pillow's names of the formats.
FORMATS = ("PNG", "JPEG", "GIF", "BMP")
# EXIF orientations that turn an image on its side (width and height swap).
SIDEWAYS = (5, 6, 7, 8)


class Header(NamedTuple):
    """What a file's header says of the image that preparation.prepare_image makes of it."""
    width: int  # upright: after the EXIF orientation a JPEG carries
    height: int
    mode: str  # Pillow's: "L" grey, "RGB", "RGBA", "P" palette, "I;16" ...
    format: str  # Pillow's: "PNG", "JPEG", "GIF", "BMP"
    orientation: int = 1  # a JPEG's EXIF orientation, 1..8
    transparent: bool = False  # has alpha or a transparent colour
    deep: bool = False  # 16 bits a sample, scaled to 8
    simple: bool = False  # 8-bit grey or RGB PNG or JPEG, upright, opaque (prepare_simple)

    @property
    def channels(self) -> int:
        return 1 if self.mode in GREY_MODES else 3


def describe_size(height: int, width: int) -> str:
    """'160 wide x 120 high': a bare 120x160 reads as width x height to some, height x
    width (NumPy's order) to others."""
    return f"{width} wide x {height} high"


def image_header(path: str) -> Header:
    """The image's size, mode and format from the file's header, without decoding its
    pixels. ValueError if the file is no image the preparation decodes; OSError if it
    cannot be read."""
    from PIL import Image

    # Our limit (check_pixels), told from the header, replaces Pillow's own: set once for
    # the process, not around each call, since headers are read in parallel threads.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            return _header_of(image)
    except Image.UnidentifiedImageError:
        raise ValueError("not an image (PNG, JPEG, GIF or BMP expected)") from None


def _header_of(image) -> Header:
    if image.format not in FORMATS:
        raise ValueError(f"a {image.format} image: PNG, JPEG, GIF or BMP expected (convert "
                         "it, e.g. to PNG)")
    # What each pixel is stored as (PNG: "RGB;16B" for 16 bits; JPEG: ("RGB", "")).
    raw = image.tile[0][3] if image.tile else None
    raw = raw[0] if isinstance(raw, tuple) else raw
    if image.format == "BMP" and (image.info.get("compression", 0) not in (0, 3)
                                  or raw in ("BGR;15", "BGR;16")):
        raise ValueError("a compressed or 16-bit BMP, which the decoder does not read: save "
                         "it as PNG, or as a BMP of 1, 4, 8, 24 or 32 bits")
    orientation = 1
    if image.format == "JPEG":
        orientation = image.getexif().get(0x0112, 1)
        orientation = orientation if orientation in range(1, 9) else 1
    width, height = image.size
    if orientation in SIDEWAYS:
        width, height = height, width
    transparent = image.mode in ("LA", "RGBA", "PA") or "transparency" in image.info
    deep = image.format == "PNG" and ("16" in (raw or "") or image.mode.startswith("I"))
    simple = (image.format in ("PNG", "JPEG") and image.mode in ("L", "RGB") and raw == image.mode
              and orientation == 1 and not transparent)
    return Header(width, height, image.mode, image.format, orientation, transparent, deep,
                  simple)


def check_pixels(path: str, max_pixels: int = MAX_PIXELS) -> Header:
    """image_header(path), or ValueError if the image has more than `max_pixels` pixels."""
    header = image_header(path)
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise ValueError(f"{width} wide x {height} high is {width * height:,} pixels, above "
                         f"the limit of {max_pixels:,} read from its header before decoding "
                         "(--max_pixels raises it)")
    # A limit raised past what the machine holds: RGBA float32, and its resize. Asked
    # of the system only for images that large, not for every header of a big folder.
    needed = width * height * 4 * 4 * 2
    if needed > LARGE_DECODE:
        try:
            check_fits(f"{width} wide x {height} high", needed,
                       "lower --max_pixels to skip such images")
        except UsageError as e:
            raise ValueError(str(e)) from None
    return header


def grid_rows(images, columns: int) -> list:
    """(n, H, W, C) -> rows of `columns` images; the last row is filled with white."""
    missing = -len(images) % columns
    images = np.concatenate([images, np.ones((missing, *images.shape[1:]), images.dtype)])
    return [images[i:i + columns] for i in range(0, len(images), columns)]


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tiles rows of images into one picture.

    rows: each (n, H, W, C) floats in [0, 1], all of one shape.
    Returns uint8 (len(rows) * (H + pad) + pad, n * (W + pad) + pad, C), white gaps.
    """
    n, height, width, channels = rows[0].shape
    grid = np.full((len(rows) * (height + pad) + pad, n * (width + pad) + pad, channels),
                   255, np.uint8)
    for r, row in enumerate(rows):
        for i, image in enumerate(row):
            top, left = pad + r * (height + pad), pad + i * (width + pad)
            grid[top:top + height, left:left + width] = np.round(np.clip(image, 0, 1) * 255)
    return grid


def write_png(path: str, image: np.ndarray) -> None:
    """image: uint8 (H, W, C) with C in {1, 3, 4}. Written atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, tf.io.encode_png(image).numpy())


# Browsers' WebGL textures, which hold the projector's sprite, go up to 8192 pixels a side.
MAX_SPRITE_SIZE = 8192


def sprite_image(images: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Tiles images row by row into a square sprite for TensorBoard's projector.

    images: (N, H, W, C) uint8 or floats in [0, 1].  Single-channel images are inverted
    (dark strokes on white, as the original's `write_sprite_image`).  Thumbnails are
    shrunk, keeping their aspect ratio, only when the sprite would exceed 8192 pixels.
    Returns the sprite, uint8 (rows * h, cols * w, C) with cols = ceil(sqrt(N)) and
    unused cells white, and the thumbnails' size (h, w).
    """
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    n, height, width, channels = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    scale = min(1.0, MAX_SPRITE_SIZE / (cols * max(height, width)))
    if scale < 1:
        height, width = max(1, int(height * scale)), max(1, int(width * scale))
        images = tf.cast(tf.round(tf.image.resize(images, (height, width), "area")),
                         tf.uint8).numpy()
    if channels == 1:
        images = 255 - images
    sprite = np.full((rows * height, cols * width, channels), 255, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // cols) * height, (i % cols) * width
        sprite[top:top + height, left:left + width] = image
    return sprite, (height, width)
