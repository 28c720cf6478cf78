"""A picture of a two-value code space (models trained with --code_size 2): latent_2d.png.

Left, the codes of test images as a scatter, one colour per label. Right, for a
variational model, the images its decoder makes from a grid of codes over the prior
N(0, I), as the Keras VAE example shows them. Drawn with matplotlib's Figure and its
Agg canvas, without pyplot, so it needs no display and keeps no global state.
"""
from __future__ import annotations

import io
import statistics

import keras
import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..files import write_bytes_atomic
from ..images import image_grid
from ..model.layout import to_model_layout, to_nhwc

GRID_SIDE = 15  # decoded images per side of the grid
# The grid spans these quantiles of N(0, 1) on each axis: the middle 90% of the prior.
GRID_QUANTILES = (0.05, 0.95)


def has_2d_code(model: keras.Model) -> bool:
    return tuple(model.encoder.output_shape[1:]) == (2,)


def grid_codes(side: int = GRID_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The grid's axis values (side,) and its codes (side * side, 2), row by row from the
    top (highest second value) and left to right (lowest first value)."""
    low, high = GRID_QUANTILES
    values = np.array([statistics.NormalDist().inv_cdf(q)
                       for q in np.linspace(low, high, side)], np.float32)
    ys, xs = np.meshgrid(values[::-1], values, indexing="ij")
    return values, np.stack([xs.ravel(), ys.ravel()], axis=1)


def decoded_grid(decoder: keras.Model, data_format: str,
                 side: int = GRID_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The grid's axis values and the decoded images, (side, side, H, W, C) NHWC in [0, 1]."""
    values, codes = grid_codes(side)
    logits = decoder.predict(to_model_layout(codes, data_format), verbose=0)
    images = to_nhwc(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)), data_format)
    return values, images.reshape(side, side, *images.shape[1:])


def latent_figure(codes: np.ndarray, labels: np.ndarray, grid=None) -> Figure:
    """codes: (N, 2); labels: (N,) ints; grid: decoded_grid's result, or None."""
    figure = Figure(figsize=(12 if grid is not None else 6.5, 6), layout="constrained")
    axes = figure.subplots(1, 2 if grid is not None else 1, squeeze=False)[0]
    scatter = axes[0]
    classes = np.unique(labels)
    few = len(classes) <= 10  # tab10's distinct colours; more labels share a gradient
    colours = matplotlib.colormaps["tab10" if few else "viridis"]
    for i, label in enumerate(classes):
        chosen = codes[labels == label]
        scatter.scatter(chosen[:, 0], chosen[:, 1], s=3, alpha=0.6, label=str(label),
                        color=colours(i if few else i / (len(classes) - 1)))
    scatter.set(title=f"codes of {len(codes):,} test images", xlabel="code[0]", ylabel="code[1]")
    scatter.legend(title="label", markerscale=4, loc="upper left", bbox_to_anchor=(1, 1))
    if grid is not None:
        values, images = grid
        side, _, height, width, channels = images.shape
        picture = image_grid(list(images), pad=0)
        step = (values[-1] - values[0]) / (side - 1)  # each image centred on its code
        extent = (values[0] - step / 2, values[-1] + step / 2,
                  values[0] - step / 2, values[-1] + step / 2)
        axes[1].imshow(picture.squeeze(-1) if channels == 1 else picture,
                       cmap="gray" if channels == 1 else None, vmin=0, vmax=255, extent=extent)
        axes[1].set(title="decoded from a grid of codes over N(0, I)",
                    xlabel="code[0]", ylabel="code[1]")
    return figure


def write_latent_2d(path: str, model: keras.Model, codes: np.ndarray, labels: np.ndarray,
                    data_format: str) -> None:
    """Draws `codes` (and, for a variational model, its decoded grid) into the PNG `path`,
    written atomically."""
    grid = decoded_grid(model.decoder, data_format) if hasattr(model, "posterior") else None
    buffer = io.BytesIO()
    latent_figure(np.asarray(codes), np.asarray(labels), grid).savefig(buffer, format="png",
                                                                        dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
