"""Anomaly scores and the calibrated threshold.

The score of an image is its reconstruction error: the mean squared error per pixel
value between the clean image in [0, 1] and sigmoid(logits), the score `predict` prints
and the export's `score` signature computes. Images unlike the training data reconstruct
worse, so a high score flags an anomaly.

The threshold is the (1 - anomaly_fpr) quantile of the scores of the normal validation
images: about anomaly_fpr of normal images score above it (false positives). A quantile
at rate r means something only with enough images beyond it: at least about 10 / r
validation images (1,000 for r = 0.01), so that ten or more lie above the threshold.
"""
from __future__ import annotations

import json
import math
import os

import keras
import numpy as np

from ..config import Config
from ..data.pipeline import noisy_inputs
from ..files import write_text_atomic
from ..model_dir import THRESHOLD

BATCH_SIZE = 512
# Images beyond the threshold a calibration needs (10 / rate validation images in all).
IMAGES_BEYOND = 10


def reconstruction_scores(model: keras.Model, images: np.ndarray, data_format: str,
                          batch_size: int = BATCH_SIZE) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N,) float64 scores: each image's mean squared error between
    the clean image in [0, 1] and the model's reconstruction (sigmoid of its logits)."""
    scores = []
    for start in range(0, len(images), batch_size):  # a batch at a time: files stay files
        batch = noisy_inputs(images[start:start + batch_size], 0.0, data_format=data_format)[0]
        pixels = keras.ops.convert_to_numpy(keras.ops.sigmoid(model(batch, training=False)))
        scores.append(np.mean(np.square(batch - pixels), axis=tuple(range(1, batch.ndim))))
    return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


def images_needed(anomaly_fpr: float) -> int:
    """Validation images a threshold at this false-positive rate needs to mean anything."""
    return math.ceil(IMAGES_BEYOND / anomaly_fpr)


def calibrate(model: keras.Model, model_dir: str, config: Config,
              validation_images: np.ndarray, log=print) -> dict:
    """Sets the threshold at the (1 - config.anomaly_fpr) quantile of the validation
    images' scores and writes it, atomically, into model_dir/threshold.json; returns its
    record.
    Warns in one line when there are fewer images than the rate needs."""
    scores = reconstruction_scores(model, validation_images, config.data_format)
    fpr = config.anomaly_fpr
    record = {
        "threshold": float(np.quantile(scores, 1 - fpr)),
        "anomaly_fpr": fpr,
        "validation_images": len(scores),
        "normal_classes": config.normal_classes,  # None: every validation image
        "score": "mean squared error per pixel value between the image in [0, 1] and its "
                 "reconstruction",
    }
    record["validation_flagged"] = float(np.mean(scores > record["threshold"]))
    needed = images_needed(fpr)
    if len(scores) < needed:
        log(f"Warning: {len(scores):,} validation images are too few to calibrate a threshold "
            f"at a {fpr:g} false-positive rate (about {needed:,} needed): it is a rough one")
    write_text_atomic(os.path.join(model_dir, THRESHOLD),
                      json.dumps(record, indent=2) + "\n")
    log(f"Anomaly threshold {record['threshold']:.6f}: it flags "
        f"{record['validation_flagged']:.2%} of the {len(scores):,} validation images "
        f"(--anomaly_fpr {fpr:g})")
    return record


def detection_metrics(scores: np.ndarray, labels: np.ndarray, normal_classes,
                      threshold: float) -> dict:
    """How well `scores` (higher: more anomalous) tell the test images of other classes
    (positives) from those of `normal_classes`: AUROC, AUPRC (average precision), the
    false- and true-positive rates at `threshold`, and the AUROC of each anomalous class
    against the normal images."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    anomalous = ~np.isin(labels, list(normal_classes))
    per_class = {}
    for label in np.unique(labels[anomalous]).tolist():
        chosen = ~anomalous | (labels == label)
        per_class[str(label)] = float(roc_auc_score(anomalous[chosen], scores[chosen]))
    return {
        "auroc": float(roc_auc_score(anomalous, scores)),
        "auprc": float(average_precision_score(anomalous, scores)),
        "fpr_at_threshold": float(np.mean(scores[~anomalous] > threshold)),
        "tpr_at_threshold": float(np.mean(scores[anomalous] > threshold)),
        "normal_images": int(np.sum(~anomalous)),
        "anomalous_images": int(np.sum(anomalous)),
        "auroc_per_anomalous_class": per_class,
    }


def anomaly_figure(scores: np.ndarray, anomalous: np.ndarray, threshold: float, auroc: float):
    """The ROC curve (left) and the score histograms of normal and anomalous images with
    the threshold (right): a matplotlib Figure, drawn without pyplot."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    roc, histograms = figure.subplots(1, 2)
    fpr, tpr, _ = roc_curve(anomalous, scores)
    roc.plot(fpr, tpr, label=f"autoencoder (AUROC {auroc:.3f})")
    roc.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    at = (np.mean(scores[~anomalous] > threshold), np.mean(scores[anomalous] > threshold))
    roc.plot(*at, "o", color="black", label="calibrated threshold")
    roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC, test split")
    roc.legend(loc="lower right")
    bins = np.linspace(scores.min(), np.quantile(scores, 0.995), 60)
    histograms.hist(scores[~anomalous], bins=bins, alpha=0.6, density=True, label="normal")
    histograms.hist(scores[anomalous], bins=bins, alpha=0.6, density=True, label="anomalous")
    histograms.axvline(threshold, color="black", linestyle="--", label="threshold")
    histograms.set(xlabel="score (reconstruction MSE)", ylabel="density",
                   title="scores of the test images")
    histograms.legend()
    return figure


def write_anomaly_report(model_dir: str, model: keras.Model, config: Config, test,
                         threshold: float, plot_path: str, extremes_path: str,
                         columns: int = 10) -> dict:
    """Scores the test split (`test`: images and labels), returns detection_metrics and
    draws them into `plot_path` (ROC and histograms) and `extremes_path` (the `columns`
    most anomalous test images above, the least anomalous below), both PNGs written
    atomically; the ROC picture also goes to TensorBoard (model_dir's `anomaly/roc`)."""
    import io

    import tensorflow as tf

    from ..files import write_bytes_atomic
    from ..images import image_grid, write_png

    scores = reconstruction_scores(model, test.images, config.data_format)
    metrics = detection_metrics(scores, test.labels, config.normal_classes, threshold)
    anomalous = ~np.isin(test.labels, list(config.normal_classes))
    buffer = io.BytesIO()
    anomaly_figure(scores, anomalous, threshold, metrics["auroc"]).savefig(
        buffer, format="png", dpi=100)
    write_bytes_atomic(plot_path, buffer.getvalue())
    order = np.argsort(scores)
    count = min(columns, len(order))
    # Just the images shown: a folder's or TFDS's images are read, not indexed in memory.
    shown = test.images[np.concatenate([order[::-1][:count], order[:count]])]
    pixels = shown.astype(np.float32) / 255
    write_png(extremes_path, image_grid([pixels[:count], pixels[count:]]))
    with tf.summary.create_file_writer(model_dir).as_default(step=0):
        tf.summary.image("anomaly/roc", tf.io.decode_png(buffer.getvalue())[None])
    return metrics
