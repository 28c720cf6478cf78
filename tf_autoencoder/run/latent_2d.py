"""A picture of a two-value code space (models trained with --code_size 2): latent_2d.png.

Left, the codes of test images as a scatter, one colour per label. For a variational
model, two grids of decoded images beside it: one over the prior N(0, I), as the Keras
VAE example shows it, and one over where the test codes are. The two differ when the
codes have not settled on the prior (after few epochs they can sit far off it, and the
prior's grid then decodes nothing like the data); the scatter outlines both grids' areas,
so the picture shows why. Drawn with matplotlib's Figure and its Agg canvas, without
pyplot, so it needs no display and keeps no global state.
"""
from __future__ import annotations

import dataclasses
import io
import statistics

import keras
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..files import write_bytes_atomic
from ..images import image_grid
from ..model.layout import to_model_layout, to_nhwc

GRID_SIDE = 15  # decoded images per side of a grid
# Each grid spans these quantiles on each axis: the middle 90% of the prior N(0, 1), or
# of the test codes' values.
GRID_QUANTILES = (0.05, 0.95)
PRIOR_COLOUR, CODES_COLOUR = "black", "tab:red"  # the grids' outlines in the scatter


@dataclasses.dataclass
class DecodedGrid:
    """Images a decoder makes from a grid of codes: images[i, j] decodes (xs[j], ys[i]).

    xs: (side,) ascending; ys: (side,) descending (the top row has the highest code[1]);
    images: (side, side, H, W, C) NHWC in [0, 1]; title: what the grid spans."""
    xs: np.ndarray
    ys: np.ndarray
    images: np.ndarray
    title: str
    colour: str


def has_2d_code(model: keras.Model) -> bool:
    return tuple(model.encoder.output_shape[1:]) == (2,)


def prior_values(side: int = GRID_SIDE) -> np.ndarray:
    """(side,) equally spaced quantiles of N(0, 1) over GRID_QUANTILES, ascending."""
    low, high = GRID_QUANTILES
    return np.array([statistics.NormalDist().inv_cdf(q) for q in np.linspace(low, high, side)],
                    np.float32)


def code_values(codes: np.ndarray, side: int = GRID_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(side,) values per axis, evenly spaced between the GRID_QUANTILES of the codes'
    values on that axis, ascending; a spread-less axis gets +-0.5 around its value."""
    low, high = np.quantile(np.asarray(codes, np.float64), GRID_QUANTILES, axis=0)
    same = high - low < 1e-6
    low, high = np.where(same, low - 0.5, low), np.where(same, high + 0.5, high)
    return tuple(np.linspace(low[i], high[i], side).astype(np.float32) for i in range(2))


def grid_codes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(len(ys) * len(xs), 2) codes, row by row from the top (highest ys value) and left to
    right (lowest xs value); xs and ys ascending."""
    rows, columns = np.meshgrid(ys[::-1], xs, indexing="ij")
    return np.stack([columns.ravel(), rows.ravel()], axis=1).astype(np.float32)


def decoded_grid(decoder: keras.Model, data_format: str, xs: np.ndarray | None = None,
                 ys: np.ndarray | None = None, *, side: int = GRID_SIDE,
                 title: str = "decoded from a grid over the prior N(0, I)",
                 colour: str = PRIOR_COLOUR) -> DecodedGrid:
    """The decoder's images of grid_codes(xs, ys); by default a grid over the prior
    (prior_values(side) on both axes)."""
    xs = prior_values(side) if xs is None else xs
    ys = prior_values(side) if ys is None else ys
    logits = decoder.predict(to_model_layout(grid_codes(xs, ys), data_format), verbose=0)
    images = to_nhwc(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)), data_format)
    return DecodedGrid(xs, ys[::-1], images.reshape(len(ys), len(xs), *images.shape[1:]),
                       title, colour)


def codes_grid(decoder: keras.Model, data_format: str, codes: np.ndarray,
               side: int = GRID_SIDE) -> DecodedGrid:
    """A decoded grid over where `codes` (N, 2) are: the middle 90% of each axis."""
    xs, ys = code_values(codes, side)
    centre = np.median(codes, axis=0)
    return decoded_grid(decoder, data_format, xs, ys, side=side, colour=CODES_COLOUR,
                        title=f"decoded from a grid over the test codes\n(middle 90% of each "
                              f"axis; median ({centre[0]:.2f}, {centre[1]:.2f}))")


def extent(grid: DecodedGrid) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in code units: each image centred on its code."""
    def span(values):
        step = (values.max() - values.min()) / max(len(values) - 1, 1)
        return float(values.min() - step / 2), float(values.max() + step / 2)
    (left, right), (bottom, top) = span(grid.xs), span(grid.ys)
    return left, right, bottom, top


def latent_figure(codes: np.ndarray, labels: np.ndarray, grids=()) -> Figure:
    """codes: (N, 2); labels: (N,) ints; grids: DecodedGrids drawn beside the scatter, each
    outlined in the scatter in its colour."""
    grids = list(grids)
    figure = Figure(figsize=(6.5 + 5.5 * len(grids), 6), layout="constrained")
    axes = figure.subplots(1, 1 + len(grids), squeeze=False)[0]
    scatter = axes[0]
    classes = np.unique(labels)
    few = len(classes) <= 10  # tab10's distinct colours; more labels share a gradient
    colours = matplotlib.colormaps["tab10" if few else "viridis"]
    for i, label in enumerate(classes):
        chosen = codes[labels == label]
        scatter.scatter(chosen[:, 0], chosen[:, 1], s=3, alpha=0.6, label=str(label),
                        color=colours(i if few else i / max(len(classes) - 1, 1)))
    scatter.set(title=f"codes of {len(codes):,} test images", xlabel="code[0]", ylabel="code[1]")
    scatter.legend(title="label", markerscale=4, loc="upper left", bbox_to_anchor=(1, 1))
    for grid, panel in zip(grids, axes[1:]):
        left, right, bottom, top = extent(grid)
        scatter.add_patch(Rectangle((left, bottom), right - left, top - bottom, fill=False,
                                    edgecolor=grid.colour, linewidth=1.5, linestyle="--",
                                    label=f"_{grid.title}"))  # "_": not in the legend
        channels = grid.images.shape[-1]
        picture = image_grid(list(grid.images), pad=0)
        panel.imshow(picture.squeeze(-1) if channels == 1 else picture,
                     cmap="gray" if channels == 1 else None, vmin=0, vmax=255,
                     extent=(left, right, bottom, top), aspect="auto")
        panel.set_title(grid.title, color=grid.colour)
        panel.set(xlabel="code[0]", ylabel="code[1]")
    scatter.autoscale_view()
    return figure


def model_figure(model: keras.Model, codes: np.ndarray, labels: np.ndarray,
                 data_format: str) -> Figure:
    """The picture of `model`'s codes: with its decoded grids over the prior and over the
    codes for a variational model."""
    codes = np.asarray(codes)
    grids = [decoded_grid(model.decoder, data_format),
             codes_grid(model.decoder, data_format, codes)] if hasattr(model, "posterior") else []
    return latent_figure(codes, np.asarray(labels), grids)


def write_latent_2d(path: str, model: keras.Model, codes: np.ndarray, labels: np.ndarray,
                    data_format: str) -> None:
    """Draws model_figure into the PNG `path`, written atomically."""
    buffer = io.BytesIO()
    model_figure(model, codes, labels, data_format).savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(path, buffer.getvalue())
