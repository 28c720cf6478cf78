"""The test split's anomaly maps against its defect masks (the MVTec AD layout):
`evaluate`'s localisation report and its picture of the worst-localised images.

Each test image's map is model.maps.anomaly_map of the clean image and the model's
reconstruction (sigmoid of its logits), at the input's resolution; localisation.py
scores the maps against the masks (pixel AUROC, PRO), over all test images and per
defect type.
"""
from __future__ import annotations

import io
import textwrap

import keras
import numpy as np

from ..files import write_bytes_atomic
from ..model.layout import to_nhwc
from ..model.maps import anomaly_map
from .anomaly import BATCH_SIZE, clean_batches
from .localisation import localisation_metrics, per_image_auroc

WORST_SHOWN = 6  # columns of the worst-localised picture


def test_maps(model: keras.Model, images, data_format: str, kind: str = "l2",
              sigma: float = 4.0) -> np.ndarray:
    """uint8 (N, H, W, C) images -> float32 (N, H, W) anomaly maps of `kind`, a batch at
    a time (files stay files)."""
    maps = []
    for batch in clean_batches(images, data_format, BATCH_SIZE):
        pixels = keras.ops.sigmoid(model(batch, training=False))
        maps.append(keras.ops.convert_to_numpy(anomaly_map(
            to_nhwc(batch, data_format), to_nhwc(keras.ops.convert_to_numpy(pixels), data_format),
            kind, sigma)))
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]), np.float32)


def maps_figure(images: np.ndarray, masks: np.ndarray, maps: dict[str, np.ndarray],
                captions: list[str], title: str):
    """Columns of images (uint8 (n, H, W, C)): the image, its mask, then each of `maps`
    (name -> (n, H, W)) drawn over the grey image in colour, the mask's outline on top.
    Each map row has its own colour scale (shared by its columns), so the rows compare
    by where they light up, not by value. A matplotlib Figure, drawn without pyplot."""
    from matplotlib.figure import Figure

    count = len(images)
    rows = 2 + len(maps)
    figure = Figure(figsize=(1.6 * count + 1.4, 1.6 * rows + 0.6), layout="constrained")
    axes = np.asarray(figure.subplots(rows, count, squeeze=False))
    grey = images.mean(axis=-1) if images.shape[-1] == 3 else images[..., 0]
    for column in range(count):
        axes[0, column].imshow(images[column, ..., 0] if images.shape[-1] == 1 else images[column],
                               cmap="gray", vmin=0, vmax=255)
        axes[0, column].set_title(captions[column], fontsize=8)
        axes[1, column].imshow(masks[column], cmap="gray", vmin=0, vmax=1)
    for row, (name, values) in enumerate(maps.items(), start=2):
        low, high = float(np.min(values)), float(np.max(values))
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(grey[column], cmap="gray", vmin=0, vmax=255)
            shown = axis.imshow(values[column], cmap="inferno", alpha=0.7, vmin=low, vmax=high)
            if masks[column].any():
                axis.contour(masks[column], levels=[0.5], colors="cyan", linewidths=0.8)
        figure.colorbar(shown, ax=list(axes[row]), shrink=0.8, pad=0.01)
        axes[row, 0].set_ylabel(name, fontsize=8)
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("mask", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    # Wrapped to the figure's width (about 18 characters to a column at this size).
    figure.suptitle(textwrap.fill(title, max(50, 18 * count)), fontsize=9)
    return figure


def localisation_report(model: keras.Model, config, test, masks: np.ndarray,
                        class_names: list[str], figure_path: str, kind: str = "l2",
                        sigma: float = 4.0, image_auroc: dict | None = None) -> dict:
    """Pixel AUROC and PRO of the test split's maps (`test`: images and labels; `masks`:
    bool (N, H, W)), overall and per defect type (with its image AUROC from
    `image_auroc`, detection_metrics' per-class AUROCs, where given), and the picture of
    the WORST_SHOWN defective images whose own maps find their defect worst (lowest
    per-image pixel AUROC), written atomically into `figure_path`."""
    maps = test_maps(model, test.images, config.data_format, kind, sigma)
    report = localisation_metrics(maps, masks, test.labels, class_names)
    for name, values in report["per_defect"].items():
        values["image_auroc"] = (image_auroc or {}).get(name)
    report.update(map=kind, sigma=sigma)
    own = per_image_auroc(maps, masks)
    defective = np.flatnonzero(~np.isnan(own))
    if len(defective):
        worst = defective[np.argsort(own[defective], kind="stable")][:WORST_SHOWN]
        captions = [f"{class_names[test.labels[i]]}\npixel AUROC {own[i]:.3f}" for i in worst]
        figure = maps_figure(test.images[worst], masks[worst], {f"{kind} map": maps[worst]},
                             captions, f"The {len(worst)} worst-localised defective test images "
                             f"({kind} maps, sigma {sigma:g}); cyan: the mask's outline")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        write_bytes_atomic(figure_path, buffer.getvalue())
        report["figure"] = figure_path
    return report
