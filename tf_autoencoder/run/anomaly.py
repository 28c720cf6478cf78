"""Anomaly scores and the calibrated threshold.

The score of an image is one of two (--anomaly_score); images unlike the training data
score higher, so a high score flags an anomaly:
  reconstruction  its reconstruction error: the mean squared error per pixel value
                  between the clean image in [0, 1] and sigmoid(logits)
  code            the Mahalanobis distance of its code (the encoder's output, a VAE's
                  mean; flattened in NHWC order) to a Gaussian fitted on the codes of the
                  normal training images: sqrt((z - mean)^T precision (z - mean)). An
                  anomaly the decoder happens to reconstruct well can still land where
                  normal images' codes do not.
anomaly_scores computes either: `predict` prints it and the export's `score` signature
computes it.

The threshold is the (1 - anomaly_fpr) quantile of the scores of the normal validation
images: about anomaly_fpr of normal images score above it (false positives). A quantile
at rate r means something only with enough images beyond it: at least about 10 / r
validation images (1,000 for r = 0.01), so that ten or more lie above the threshold.
"""
from __future__ import annotations

import io
import json
import math
import os

import keras
import numpy as np

from ..config import Config
from ..data.pipeline import noisy_inputs
from ..data.sources import describe_classes, name_of_class
from ..errors import ConfigError, DataError
from ..files import write_bytes_atomic, write_json_atomic
from ..model.layout import to_nhwc
from ..model_dir import CODE_GAUSSIAN, THRESHOLD, load_finished_run, read_code_gaussian
from ..words import plural

BATCH_SIZE = 512
# Images beyond the threshold a calibration needs (10 / rate validation images in all).
IMAGES_BEYOND = 10
# The codes' covariance is shrunk toward equal variances by the Oracle Approximating
# Shrinkage rule (Chen, Wiesel, Eldar and Hero, IEEE Trans. Signal Processing 2010;
# sklearn.covariance.OAS), which picks the shrinkage from the number of images and the
# covariance alone, so it can be computed from streamed sums. With fewer images than code
# values (a convolutional code of hundreds of values, a few hundred normal images) the
# sample covariance is singular, and its inverse, even with a small ridge, weighs the
# directions no training code varied in a thousand times more than the rest: every new
# image, normal or not, lands far away. At least MIN_SHRINKAGE, so that a code value that
# never varies (a dead ReLU) keeps a variance and the precision's largest values stay
# bounded, which keeps the export's float32 arithmetic close to this float64 one.
MIN_SHRINKAGE = 1e-3
SCORES = {
    "reconstruction": "mean squared error per pixel value between the image in [0, 1] and "
                      "its reconstruction",
    "code": "Mahalanobis distance of the image's code to the Gaussian of the normal training "
            f"images' codes ({CODE_GAUSSIAN}: mean, precision = inverse of the covariance "
            "shrunk toward equal variances, OAS)",
}


def clean_batches(images: np.ndarray, data_format: str, batch_size: int):
    """uint8 NHWC images -> float32 batches in [0, 1] in `data_format`, a batch at a time:
    files stay files."""
    for start in range(0, len(images), batch_size):
        yield noisy_inputs(images[start:start + batch_size], 0.0, data_format=data_format)[0]


def reconstruction_scores(model: keras.Model, images: np.ndarray, data_format: str,
                          batch_size: int = BATCH_SIZE) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N,) float64 scores: each image's mean squared error between
    the clean image in [0, 1] and the model's reconstruction (sigmoid of its logits)."""
    scores = []
    for batch in clean_batches(images, data_format, batch_size):
        pixels = keras.ops.convert_to_numpy(keras.ops.sigmoid(model(batch, training=False)))
        scores.append(np.mean(np.square(batch - pixels), axis=tuple(range(1, batch.ndim))))
    return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


def image_codes(model: keras.Model, images: np.ndarray, data_format: str,
                batch_size: int = BATCH_SIZE):
    """uint8 (N, H, W, C) -> batches of float64 codes (n, D), each flattened in NHWC order
    (so that an NCHW model and its NHWC twin give the same vectors, as the export's do)."""
    for batch in clean_batches(images, data_format, batch_size):
        codes = to_nhwc(keras.ops.convert_to_numpy(model.encoder(batch, training=False)),
                        data_format)
        yield codes.reshape(len(codes), -1).astype(np.float64)


def code_gaussian(code_batches) -> dict:
    """The Gaussian of codes that come in batches (n, D): {"mean", "precision",
    "shrinkage", "images"}, from sums accumulated in float64, so that memory does not grow
    with the number of images. The sums are taken about the first batch's mean: sums of
    squares about a far-off origin would lose the variance to rounding. The covariance is
    OAS's (as sklearn.covariance.OAS computes it), shrunk by at least MIN_SHRINKAGE."""
    from sklearn.covariance import shrunk_covariance

    count, shift, total, outer = 0, None, None, None
    for codes in code_batches:
        if shift is None:
            shift = codes.mean(axis=0)
            total, outer = np.zeros_like(shift), np.zeros((len(shift), len(shift)))
        centred = codes - shift
        count += len(codes)
        total += centred.sum(axis=0)
        outer += centred.T @ centred
    if count < 2:
        raise DataError(f"fitting a Gaussian to the training images' codes takes at least 2 "
                        f"images, got {count}")
    mean = total / count
    covariance = outer / count - np.outer(mean, mean)  # the maximum-likelihood one, as OAS's
    shrinkage = max(oas_shrinkage(covariance, count), MIN_SHRINKAGE)
    if not np.trace(covariance) > 0:  # codes that never vary at all: unit variances
        covariance, shrinkage = np.eye(len(mean)), 1.0
    precision = np.linalg.inv(shrunk_covariance(covariance, shrinkage))
    # Symmetric exactly, as the quadratic form assumes.
    return {"mean": shift + mean, "precision": (precision + precision.T) / 2,
            "shrinkage": shrinkage, "images": count}


def oas_shrinkage(covariance: np.ndarray, count: int) -> float:
    """The Oracle Approximating Shrinkage of the maximum-likelihood covariance of `count`
    samples: sklearn.covariance.oas's formula, which needs only the covariance (sklearn
    takes the samples themselves, all in memory)."""
    size = len(covariance)
    if size == 1:
        return 0.0  # one value: shrinking toward its own variance changes nothing
    alpha = np.mean(covariance ** 2)
    mu_squared = (np.trace(covariance) / size) ** 2
    denominator = (count + 1) * (alpha - mu_squared / size)
    return 1.0 if denominator == 0 else float(min((alpha + mu_squared) / denominator, 1.0))


def too_few_images(gaussian: dict) -> str | None:
    """One line when the Gaussian rests on no more images than the code has values (its
    covariance is then mostly the shrinkage's guess), else None."""
    images, values = gaussian["images"], len(gaussian["mean"])
    if images > values:
        return None
    return (f"Note: the codes' Gaussian rests on {images:,} images for {values:,} code values: "
            f"its covariance is shrunk {gaussian['shrinkage']:.0%} toward equal variances; "
            f"more normal training images, or a smaller code (--code_size), estimate it better")


def code_distances(codes: np.ndarray, gaussian: dict) -> np.ndarray:
    """(N, D) codes -> (N,) Mahalanobis distances sqrt((z - mean)^T precision (z - mean))."""
    centred = codes - gaussian["mean"]
    squared = np.einsum("ij,jk,ik->i", centred, gaussian["precision"], centred)
    return np.sqrt(np.maximum(squared, 0))  # >= 0 but for rounding


def anomaly_scores(model: keras.Model, images: np.ndarray, config: Config,
                   gaussian: dict | None = None) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N,) float64 scores of config.anomaly_score: the
    reconstruction error, or the code distance to `gaussian` (code_gaussian's)."""
    if config.anomaly_score == "code":
        distances = [code_distances(codes, gaussian)
                     for codes in image_codes(model, images, config.data_format)]
        return np.concatenate(distances) if distances else np.zeros(0)
    return reconstruction_scores(model, images, config.data_format)


def write_code_gaussian(model_dir: str, gaussian: dict) -> None:
    """Writes `gaussian` atomically into model_dir/code_gaussian.npz."""
    buffer = io.BytesIO()
    np.savez(buffer, **gaussian)
    write_bytes_atomic(os.path.join(model_dir, CODE_GAUSSIAN), buffer.getvalue())


def served_gaussian(model_dir: str, config: Config) -> dict | None:
    """The Gaussian the run's score uses (code_gaussian.npz), None for reconstruction."""
    return read_code_gaussian(model_dir) if config.anomaly_score == "code" else None


def check_same_calibration(model_dir: str, config: Config) -> None:
    """ConfigError when a finished run, whose threshold is not set again, was calibrated
    with another --anomaly_score or --anomaly_fpr than `config` asks for (a rerun that
    changed nothing must not look as if it had)."""
    try:
        with open(os.path.join(model_dir, THRESHOLD)) as f:
            record = json.load(f)
        calibrated = (record.get("anomaly_score", "reconstruction"), record["anomaly_fpr"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no calibration to compare with: exporting says what is missing
    if calibrated != (config.anomaly_score, config.anomaly_fpr):
        raise ConfigError(
            f"{model_dir} is a finished run calibrated with --anomaly_score {calibrated[0]} "
            f"--anomaly_fpr {calibrated[1]:g}, and a finished run is not calibrated again: "
            f"train into a new --model_dir for --anomaly_score {config.anomaly_score} "
            f"--anomaly_fpr {config.anomaly_fpr:g}, or recalibrate this one: set them in its "
            f"config.json, then run `tf-autoencoder evaluate {model_dir}` and "
            f"`tf-autoencoder export {model_dir}`")


def check_same_map(model_dir: str, config: Config) -> None:
    """ConfigError when a finished run, whose export is not made again, serves another
    anomaly map than `config` asks for (--anomaly_map, --anomaly_map_sigma): a rerun
    must not look as if it had changed the map its export serves."""
    try:
        served = load_finished_run(model_dir)
    except ConfigError:
        return  # nothing to compare with: exporting says what is missing
    if (served.anomaly_map, served.anomaly_map_sigma) != (config.anomaly_map,
                                                          config.anomaly_map_sigma):
        raise ConfigError(
            f"{model_dir} is a finished run whose export serves --anomaly_map "
            f"{served.anomaly_map} --anomaly_map_sigma {served.anomaly_map_sigma:g}, and a "
            f"finished run is not exported again: train into a new --model_dir for "
            f"--anomaly_map {config.anomaly_map} --anomaly_map_sigma "
            f"{config.anomaly_map_sigma:g}, or set them in its config.json, then run "
            f"`tf-autoencoder export {model_dir}` (the map needs no training)")


def images_needed(anomaly_fpr: float) -> int:
    """Validation images a threshold at this false-positive rate needs to mean anything."""
    return math.ceil(IMAGES_BEYOND / anomaly_fpr)


def calibrate(model: keras.Model, model_dir: str, config: Config,
              validation_images: np.ndarray, train_images: np.ndarray, log=print,
              refit: bool = True) -> dict:
    """Sets the threshold at the (1 - config.anomaly_fpr) quantile of the validation
    images' scores and writes it, atomically, into model_dir/threshold.json; returns its
    record. With --anomaly_score code, the codes' Gaussian is fitted on the (normal)
    `train_images` first and written into model_dir/code_gaussian.npz; with refit False,
    the one the run has is kept (the one its export carries), fitted only if it has none.
    Warns in one line when there are fewer images than the rate needs."""
    gaussian = None
    if config.anomaly_score == "code":
        if not refit and os.path.exists(os.path.join(model_dir, CODE_GAUSSIAN)):
            gaussian = read_code_gaussian(model_dir)
        else:
            gaussian = code_gaussian(image_codes(model, train_images, config.data_format))
            write_code_gaussian(model_dir, gaussian)
            if too_few_images(gaussian):
                log(too_few_images(gaussian))
    scores = anomaly_scores(model, validation_images, config, gaussian)
    fpr = config.anomaly_fpr
    record = {
        "threshold": float(np.quantile(scores, 1 - fpr)),
        "anomaly_fpr": fpr,
        "validation_images": len(scores),
        "normal_classes": config.normal_classes,  # None: every validation image
        "anomaly_score": config.anomaly_score,
        "score": SCORES[config.anomaly_score],
    }
    record["validation_flagged"] = float(np.mean(scores > record["threshold"]))
    needed = images_needed(fpr)
    if len(scores) < needed:
        usable = min(0.5, IMAGES_BEYOND / max(1, len(scores)))
        log(f"Warning: {plural(len(scores), 'validation image')} are too few to calibrate a "
            f"threshold at a {fpr:g} false-positive rate (about {needed:,} needed): it is a "
            f"rough one; give more normal images, or --anomaly_fpr {usable:.2g} or higher")
    write_json_atomic(os.path.join(model_dir, THRESHOLD), record)
    log(f"Anomaly threshold {record['threshold']:.6f}: it flags "
        f"{record['validation_flagged']:.2%} of the {len(scores):,} validation images "
        f"(--anomaly_fpr {fpr:g})")
    return record


def detection_metrics(scores: np.ndarray, labels: np.ndarray, normal_classes,
                      threshold: float, class_names: list[str] | None = None) -> dict:
    """How well `scores` (higher: more anomalous) tell the test images of other classes
    (positives) from those of `normal_classes`: AUROC, AUPRC (average precision), the
    false- and true-positive rates at `threshold`, and the AUROC of each anomalous class
    against the normal images (keyed by its name, where `class_names` gives one). A test
    split of one kind only (no anomalous image, or no normal one) ranks nothing: AUROC,
    AUPRC and the rate of the missing kind are None."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    anomalous = ~np.isin(labels, list(normal_classes))
    if anomalous.all() or not anomalous.any():
        return {
            "auroc": None, "auprc": None,
            "fpr_at_threshold": float(np.mean(scores > threshold)) if not anomalous.any() else None,
            "tpr_at_threshold": float(np.mean(scores > threshold)) if anomalous.all() else None,
            "normal_images": int(np.sum(~anomalous)),
            "anomalous_images": int(np.sum(anomalous)),
            "auroc_per_anomalous_class": {},
        }
    per_class = {}
    for label in np.unique(labels[anomalous]).tolist():
        chosen = ~anomalous | (labels == label)
        per_class[name_of_class(label, class_names)] = float(
            roc_auc_score(anomalous[chosen], scores[chosen]))
    return {
        "auroc": float(roc_auc_score(anomalous, scores)),
        "auprc": float(average_precision_score(anomalous, scores)),
        "fpr_at_threshold": float(np.mean(scores[~anomalous] > threshold)),
        "tpr_at_threshold": float(np.mean(scores[anomalous] > threshold)),
        "normal_images": int(np.sum(~anomalous)),
        "anomalous_images": int(np.sum(anomalous)),
        "auroc_per_anomalous_class": per_class,
    }


def test_auroc(model: keras.Model, config: Config, test) -> float | None:
    """The AUROC of the run's anomaly score on the test split (`test`: images and labels),
    normal: config.normal_classes, as detection_metrics measures it (None when the split
    holds only one kind)."""
    scores = anomaly_scores(model, test.images, config, served_gaussian(config.model_dir, config))
    return detection_metrics(scores, test.labels, config.normal_classes, math.inf)["auroc"]


SCORE_NAMES = {"reconstruction": "reconstruction MSE", "code": "code distance"}


def anomaly_figure(scores: np.ndarray, anomalous: np.ndarray, threshold: float, auroc: float,
                   score_name: str = SCORE_NAMES["reconstruction"]):
    """The ROC curve (left) and the score histograms of normal and anomalous images with
    the threshold (right), the scores' axis named `score_name`: a matplotlib Figure,
    drawn without pyplot."""
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
    histograms.set(xlabel=f"score ({score_name})", ylabel="density",
                   title="scores of the test images")
    histograms.legend()
    return figure


def extremes_figure(images: np.ndarray, scores: np.ndarray, classes: list[str],
                    anomalous: np.ndarray, threshold: float, score_name: str):
    """Two rows of test images, the most anomalous above and the least below (`images`
    uint8 (2 * n, H, W, C), in that order), each captioned with its class, its score and
    the verdict at `threshold`; a caption in red where the verdict is wrong for its class.
    A matplotlib Figure, drawn without pyplot."""
    from matplotlib.figure import Figure

    count = len(images) // 2
    figure = Figure(figsize=(1.3 * count + 1.2, 4.4), layout="constrained")
    axes = np.asarray(figure.subplots(2, count, squeeze=False))
    grey = images.shape[-1] == 1
    for i, axis in enumerate(axes.flat):
        axis.imshow(images[i, ..., 0] if grey else images[i], cmap="gray" if grey else None,
                    vmin=0, vmax=255)
        axis.set_xticks([])
        axis.set_yticks([])
        flagged = scores[i] > threshold
        wrong = flagged != anomalous[i]
        axis.set_title(f"{classes[i]}\n{scores[i]:.4g}\n{'anomalous' if flagged else 'normal'}",
                       fontsize=8, color="red" if wrong else "black")
    axes[0, 0].set_ylabel("most anomalous")
    axes[1, 0].set_ylabel("least anomalous")
    figure.suptitle(f"Test images by score ({score_name}); threshold {threshold:.4g}: above "
                    "it, anomalous. Red: a verdict wrong for the image's class", fontsize=9)
    return figure


def write_anomaly_report(model_dir: str, model: keras.Model, config: Config, test,
                         threshold: float, plot_path: str, extremes_path: str,
                         columns: int = 10, log=print,
                         class_names: list[str] | None = None) -> dict:
    """Scores the test split (`test`: images and labels), returns detection_metrics and
    draws them into `plot_path` (ROC and histograms) and `extremes_path` (the `columns`
    most anomalous test images above, the least anomalous below, captioned), both PNGs
    written atomically; the ROC picture also goes to TensorBoard (model_dir's
    `anomaly/roc`). A test split of normal or of anomalous images only has no ROC: said
    in one line through `log`, and no plot is drawn."""
    import tensorflow as tf

    scores = anomaly_scores(model, test.images, config, served_gaussian(model_dir, config))
    metrics = detection_metrics(scores, test.labels, config.normal_classes, threshold,
                                class_names)
    anomalous = ~np.isin(test.labels, list(config.normal_classes))
    if metrics["auroc"] is None:
        kind = "anomalous" if anomalous.any() else "normal"
        log(f"No AUROC, AUPRC or ROC plot: all {len(anomalous):,} test images are {kind} "
            f"(--normal_classes {describe_classes(config.normal_classes, class_names)}), so "
            "there is nothing to rank them against: leave a class out of --normal_classes")
    else:
        buffer = io.BytesIO()
        anomaly_figure(scores, anomalous, threshold, metrics["auroc"],
                       SCORE_NAMES[config.anomaly_score]).savefig(buffer, format="png", dpi=100)
        write_bytes_atomic(plot_path, buffer.getvalue())
    order = np.argsort(scores)
    count = min(columns, len(order))
    chosen = np.concatenate([order[::-1][:count], order[:count]])
    # Just the images shown: a folder's or TFDS's images are read, not indexed in memory.
    extremes = io.BytesIO()
    extremes_figure(test.images[chosen], scores[chosen],
                    [name_of_class(int(label), class_names) for label in test.labels[chosen]],
                    anomalous[chosen], threshold, SCORE_NAMES[config.anomaly_score]).savefig(
        extremes, format="png", dpi=100)
    write_bytes_atomic(extremes_path, extremes.getvalue())
    if metrics["auroc"] is not None:
        with tf.summary.create_file_writer(model_dir).as_default(step=0):
            tf.summary.image("anomaly/roc", tf.io.decode_png(buffer.getvalue())[None])
    return metrics
