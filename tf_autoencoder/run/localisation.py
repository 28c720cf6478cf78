"""How well anomaly maps find the defects their masks mark: pixel AUROC and PRO.

  pixel AUROC  every pixel of every image ranked by its map value: the defect pixels (the
               masks') against the rest (scikit-learn's roc_auc_score)
  PRO          per-region overlap (Bergmann, Fauser, Sattlegger and Steger, "MVTec AD",
               CVPR 2019): at a threshold on the maps, each connected defect region (8-
               connected, per image) is covered to some fraction; PRO is the mean of those
               fractions, each region counting once whatever its size, so a small scratch
               weighs as much as a large stain. The curve of PRO against the false-positive
               rate of the defect-free pixels is integrated from 0 to MAX_FPR (30%) and
               divided by MAX_FPR: 1 is perfect, and a map that ranks pixels at random
               scores about MAX_FPR / 2 = 0.15.
Both on arrays: maps (N, H, W) floats, masks (N, H, W) booleans.
"""
from __future__ import annotations

import numpy as np

MAX_FPR = 0.3  # PRO is integrated up to this false-positive rate, as the paper does
EIGHT_CONNECTED = np.ones((3, 3), bool)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float | None:
    """The AUROC of the map values at separating the masks' pixels from the others;
    None when the pixels are all of one kind."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(masks, bool).ravel()
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, np.asarray(maps, np.float64).ravel()))


def regions(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) int32 region numbers: 0 outside the masks, 1.. for each 8-connected
    region of each image, numbered across the images (no region spans two images)."""
    from scipy.ndimage import label

    labelled = np.zeros(np.shape(masks), np.int32)
    count = 0
    for i, mask in enumerate(np.asarray(masks, bool)):
        numbers, found = label(mask, structure=EIGHT_CONNECTED)
        labelled[i] = np.where(numbers > 0, numbers + count, 0)
        count += found
    return labelled


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, PRO values) at every distinct map value taken as a
    threshold (a pixel above or at it is flagged), from the highest down, starting at
    (0, 0). Exact: each pixel, in descending order of its value, adds 1 / (its region's
    size x the number of regions) to PRO, or 1 / (defect-free pixels) to the rate."""
    numbers = regions(masks).ravel()
    values = np.asarray(maps, np.float64).ravel()
    sizes = np.bincount(numbers)
    count = len(sizes) - 1  # regions
    negatives = int(sizes[0])
    order = np.argsort(-values, kind="stable")
    ranked = numbers[order]
    pro_step = np.where(ranked > 0, 1.0 / (sizes[ranked] * max(count, 1)), 0.0)
    fpr_step = np.where(ranked == 0, 1.0 / max(negatives, 1), 0.0)
    # Pixels of equal value fall together: the curve's points are where the value changes.
    sorted_values = values[order]
    last_of_tie = np.append(sorted_values[1:] != sorted_values[:-1], True)
    fpr = np.concatenate([[0.0], np.cumsum(fpr_step)[last_of_tie]])
    pro = np.concatenate([[0.0], np.cumsum(pro_step)[last_of_tie]])
    return fpr, pro


def pro_score(maps: np.ndarray, masks: np.ndarray, max_fpr: float = MAX_FPR) -> float | None:
    """The area under the PRO curve from a false-positive rate of 0 to `max_fpr`,
    divided by `max_fpr` (linear between the curve's points, as the trapezoid rule); None
    without a defect region or without a defect-free pixel."""
    masks = np.asarray(masks, bool)
    if masks.all() or not masks.any():
        return None
    fpr, pro = pro_curve(maps, masks)
    # The curve cut at max_fpr, its value there interpolated.
    inside = fpr <= max_fpr
    end = np.interp(max_fpr, fpr, pro)
    fpr = np.append(fpr[inside], max_fpr)
    pro = np.append(pro[inside], end)
    area = np.sum((fpr[1:] - fpr[:-1]) * (pro[1:] + pro[:-1]) / 2)
    return float(area / max_fpr)


def localisation_metrics(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                         class_names: list[str], normal_label: int = 0) -> dict:
    """Pixel AUROC and PRO over every test image, and per defect type: that type's
    images with the defect-free ones (`normal_label`), as image AUROC per class is
    measured. {"pixel_auroc", "pro", "per_defect": {name: {"pixel_auroc", "pro",
    "images"}}}."""
    labels = np.asarray(labels)
    report = {"pixel_auroc": pixel_auroc(maps, masks), "pro": pro_score(maps, masks),
              "max_fpr": MAX_FPR, "per_defect": {}}
    for label in sorted(set(labels.tolist()) - {normal_label}):
        chosen = (labels == label) | (labels == normal_label)
        report["per_defect"][class_names[label]] = {
            "pixel_auroc": pixel_auroc(maps[chosen], masks[chosen]),
            "pro": pro_score(maps[chosen], masks[chosen]),
            "images": int(np.sum(labels == label)),
        }
    return report


def per_image_auroc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) each image's own pixel AUROC (NaN for an image whose pixels are all of one
    kind, such as a defect-free one): how well its map finds its own defect."""
    return np.array([np.nan if (value := pixel_auroc(m, k)) is None else value
                     for m, k in zip(maps, masks)])
