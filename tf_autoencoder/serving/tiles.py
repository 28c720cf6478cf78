"""Scoring an image larger than the model's input in overlapping tiles at the model's
size, instead of shrinking it to that size (which can erase a small defect).

Tiles start every half tile along each axis, the last one flush with the far edge, so
every pixel is covered and most lie in two tiles per axis. The image's map is the tiles'
maps stitched back, averaged where tiles overlap; its score is the highest tile's: a
small defect lives in one tile or two, and a mean over all tiles would dilute it by
their number. Its verdict is that score against the export's threshold, so an image is
anomalous when any tile is (the threshold was set for one model-sized image; more tiles
give more chances of a false alarm).

Memory stays bounded by the image: tiles are cut and scored TILE_VALUES at a time, never
all at once, and the stitched map is one float32 per pixel (a second per pixel value for
the reconstruction, when it is asked for).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

# Pixel values of the tiles scored in one call (16 MiB of float32): whatever the image's
# size, at most this many are cut out at once.
TILE_VALUES = 1 << 22


class Tiled(NamedTuple):
    score: float               # the highest tile's
    flagged: bool | None       # that score above the threshold (None: no verdicts)
    anomaly_map: np.ndarray    # (h, w) float32, the tiles' maps averaged where they overlap
    reconstruction: np.ndarray | None  # (h, w, C) float32 in [0, 1], averaged likewise
    tiles: int


def tile_starts(size: int, tile: int) -> list[int]:
    """Where tiles of `tile` pixels start along an axis of `size` >= tile pixels: every
    half tile, and the last flush with the end."""
    stride = max(1, tile // 2)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def fits_in_tiles(height: int, width: int, shape: tuple[int, int, int]) -> bool:
    """Whether an image of height x width is tiled for a model of (H, W, C): larger than
    the model's input and at least its size along both axes."""
    return height >= shape[0] and width >= shape[1] and (height, width) != tuple(shape[:2])


def score_in_tiles(pixels: np.ndarray, shape: tuple[int, int, int],
                   score: Callable[[np.ndarray], tuple],
                   reconstruct: Callable[[np.ndarray], np.ndarray] | None = None) -> Tiled:
    """pixels: uint8 (h, w, C), prepared at its own size (preparation.prepare_unresized);
    shape: the model's (H, W, C), h >= H and w >= W. score: float32 tiles (n, H, W, C) in
    [0, 1] -> ((n,) scores, (n,) bool verdicts or None, (n, H, W) maps), a Codec's.
    reconstruct: also stitch the tiles' reconstructions."""
    height, width = shape[:2]
    rows, columns = tile_starts(pixels.shape[0], height), tile_starts(pixels.shape[1], width)
    corners = [(top, left) for top in rows for left in columns]
    total = np.zeros(pixels.shape[:2], np.float32)
    rebuilt = np.zeros(pixels.shape, np.float32) if reconstruct else None
    best, flagged = -math.inf, None
    per_call = max(1, TILE_VALUES // int(np.prod(shape)))
    for start in range(0, len(corners), per_call):
        chunk = corners[start:start + per_call]
        tiles = np.stack([pixels[top:top + height, left:left + width] for top, left in chunk])
        tiles = tiles.astype(np.float32) / 255.0
        scores, verdicts, maps = score(tiles)
        for (top, left), tile_map in zip(chunk, maps):
            total[top:top + height, left:left + width] += tile_map
        if rebuilt is not None:
            for (top, left), tile in zip(chunk, reconstruct(tiles)):
                rebuilt[top:top + height, left:left + width] += tile
        i = int(np.argmax(scores))
        if scores[i] > best:
            best = float(scores[i])
            flagged = None if verdicts is None else bool(verdicts[i])
    # How many tiles cover each pixel: the tiles form a grid, so it is the count along
    # its row times the count along its column.
    covered = (_coverage(pixels.shape[0], rows, height)[:, None]
               * _coverage(pixels.shape[1], columns, width)[None, :])
    total /= covered
    if rebuilt is not None:
        rebuilt /= covered[..., None]
    return Tiled(best, flagged, total, rebuilt, len(corners))


def _coverage(size: int, starts: list[int], tile: int) -> np.ndarray:
    counts = np.zeros(size, np.float32)
    for start in starts:
        counts[start:start + tile] += 1
    return counts
