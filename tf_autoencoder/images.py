"""Image grids and PNG files."""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from .config import write_bytes_atomic


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
