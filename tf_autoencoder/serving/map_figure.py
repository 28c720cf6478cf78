"""One picture per image for `predict --maps`: the image, its anomaly map with a colour
scale, and the map laid over the image, the score and verdict in the title. Drawn with
matplotlib's Figure (no pyplot, no display), written whole or not at all."""
from __future__ import annotations

import io
import math

import numpy as np

from ..files import write_bytes_atomic

# Pictures of larger images are drawn from every k-th pixel (the map from the maximum of
# each k x k block, so a one-pixel peak still shows): a figure a few inches wide shows
# no more, and matplotlib would take long over millions of pixels.
SHOWN_SIDE = 1024
OVERLAY_ALPHA = 0.5
COLOUR_MAP = "inferno"


def shown(image: np.ndarray, anomaly_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image (h, w, C) and map (h, w) reduced to at most SHOWN_SIDE pixels a side."""
    step = math.ceil(max(anomaly_map.shape) / SHOWN_SIDE)
    if step == 1:
        return image, anomaly_map
    h, w = anomaly_map.shape
    padded = np.pad(anomaly_map, ((0, -h % step), (0, -w % step)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step)
    return image[::step, ::step], blocks.max(axis=(1, 3))


def map_figure(image: np.ndarray, anomaly_map: np.ndarray, title: str):
    """image: (h, w, C) uint8 or float in [0, 1], C 1 or 3; anomaly_map: (h, w) of the same
    size. Three panels side by side; the colour scale runs from 0 to the map's maximum
    (each picture its own scale: the colours say where, the scale how much)."""
    from matplotlib.figure import Figure

    image, anomaly_map = shown(image, anomaly_map)
    pixels = np.asarray(image, np.float32)
    pixels = pixels / 255.0 if np.asarray(image).dtype == np.uint8 else pixels
    grey = pixels.shape[-1] == 1
    pixels = pixels[..., 0] if grey else pixels
    aspect = anomaly_map.shape[1] / anomaly_map.shape[0]
    figure = Figure(figsize=(3 * 3.2 * min(2.0, max(0.5, aspect)) + 1.0, 3.6),
                    layout="constrained")
    axes = figure.subplots(1, 3)
    top = max(float(anomaly_map.max()), 1e-12)
    shown_image = dict(cmap="gray", vmin=0, vmax=1) if grey else {}
    axes[0].imshow(pixels, **shown_image)
    axes[0].set_title("image", fontsize=9)
    drawn = axes[1].imshow(anomaly_map, cmap=COLOUR_MAP, vmin=0, vmax=top)
    axes[1].set_title("anomaly map", fontsize=9)
    figure.colorbar(drawn, ax=axes[1], shrink=0.85)
    axes[2].imshow(pixels, **shown_image)
    axes[2].imshow(anomaly_map, cmap=COLOUR_MAP, vmin=0, vmax=top, alpha=OVERLAY_ALPHA)
    axes[2].set_title("overlay", fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    return figure


def write_map_png(path: str, image: np.ndarray, anomaly_map: np.ndarray, title: str) -> None:
    buffer = io.BytesIO()
    map_figure(image, anomaly_map, title).savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
