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
    inputs = noisy_inputs(images, 0.0, data_format=data_format)[0]
    scores = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
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
