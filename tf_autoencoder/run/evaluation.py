"""How good a trained autoencoder is: its reconstructions and its codes.

Reconstructions of the test images from clean inputs: BCE, MSE, PSNR and SSIM. (Training's
own test metrics, test_metrics.json, score inputs with the run's --noise_factor noise.)
Codes: accuracy of a linear probe (logistic regression trained on the codes of
training images, scored on the codes of test images) and of k-nearest neighbours.
A two-value code is also drawn: model_dir/latent_2d.png (see latent_2d.py).
A run trained on --normal_classes is also measured as an anomaly detector on the test
split (anomaly.py): AUROC, AUPRC, the rates at the calibrated threshold, AUROC per
anomalous class, with anomaly.png and anomaly_extremes.png. On an MVTec AD category (the
test images' defect masks known) it also scores the anomaly maps against the masks:
pixel AUROC and PRO, overall and per defect type, with localisation_worst.png
(defect_maps.py).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..config import Config
from ..files import write_json_atomic
from .anomaly import calibrate, write_anomaly_report
from .latent_2d import has_2d_code, write_latent_2d
from ..model.layout import to_nhwc
from ..serving.loading import load_finished_model
from ..model_dir import (ANOMALY_EXTREMES, ANOMALY_PLOT, EVALUATION, LATENT_2D,
                         LOCALISATION_WORST, TEST_METRICS)
from ..data.pipeline import noisy_inputs
from ..data.sources import Split, Splits

# A perfect reconstruction has infinite PSNR; each image's PSNR is capped here
# (an MSE of 1e-10) so that averages and JSON stay finite.
PSNR_CAP_DB = 100.0
SSIM_FILTER_SIZE = 11  # tf.image.ssim's default Gaussian window; smaller images use their size
KNN_NEIGHBOURS = 5
BATCH_SIZE = 512
CLEAN_INPUTS = "clean test images (no noise), scored against themselves"


def reconstruction_metrics(images: np.ndarray, logits: np.ndarray) -> dict:
    """images: (N, H, W, C) floats in [0, 1]; logits: the model's output, same shape.

    Returns means over the images: bce (sigmoid cross-entropy per pixel value), mse,
    psnr (dB, per image, capped at PSNR_CAP_DB) and ssim (tf.image.ssim, max_val 1).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    logits = tf.convert_to_tensor(logits, tf.float32)
    pixels = tf.sigmoid(logits)
    filter_size = min(SSIM_FILTER_SIZE, *images.shape[1:3])
    return {
        "bce": float(tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits))),
        "mse": float(tf.reduce_mean(tf.square(images - pixels))),
        "psnr": float(tf.reduce_mean(tf.minimum(tf.image.psnr(images, pixels, 1.0), PSNR_CAP_DB))),
        "ssim": float(tf.reduce_mean(tf.image.ssim(images, pixels, 1.0, filter_size=filter_size))),
    }


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels) -> float:
    """Accuracy on the test codes of a logistic regression fitted to the training codes.

    codes: (N, ...) any shape per example (flattened); labels: (N,) integers.  Codes are
    standardised with the training codes' mean and deviation first.
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(_flat(train_codes), train_labels)
    return float(probe.score(_flat(test_codes), test_labels))


def knn_accuracy(train_codes, train_labels, test_codes, test_labels,
                 k: int = KNN_NEIGHBOURS) -> float:
    """Accuracy of a k-nearest-neighbour vote (Euclidean distance between raw codes)."""
    knn = KNeighborsClassifier(n_neighbors=k).fit(_flat(train_codes), train_labels)
    return float(knn.score(_flat(test_codes), test_labels))


def _flat(codes) -> np.ndarray:
    codes = np.asarray(codes)
    return codes.reshape(len(codes), -1)


def evaluate_run(model_dir: str, config: Config, splits: Splits,
                 probe_samples: int | None = None, seed: int = 0, log=print,
                 map_kind: str = "l2", map_sigma: float = 4.0) -> dict:
    """Every metric of the run in `model_dir` on `splits`; writes model_dir/evaluation.json
    (and latent_2d.png for a two-value code: the key "latent_2d" names it), and calibrates
    the anomaly threshold on the validation images again (threshold.json).

    probe_samples: fit the probe and k-NN on this many training images, drawn at random
    with `seed` (default: the whole training split). map_kind, map_sigma: the anomaly
    maps scored against the masks of an MVTec AD category (model.maps.anomaly_map).
    """
    model = load_finished_model(model_dir)
    # Calibrated again (and written), so that a run from before thresholds has one to
    # export; the codes' Gaussian, which the run's export carries, is kept.
    threshold = calibrate(model, model_dir, config, splits.validation.images,
                          splits.train.images, log, refit=False)
    test_inputs = _clean_inputs(splits.test.images[:], config)
    logits = model.predict(test_inputs, batch_size=BATCH_SIZE, verbose=0)
    metrics = reconstruction_metrics(to_nhwc(test_inputs, config.data_format),
                                     to_nhwc(logits, config.data_format))

    train = splits.train
    if probe_samples is not None and probe_samples < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), probe_samples, replace=False))
        train = Split(train.images[chosen], train.labels[chosen])
    train_codes = model.encoder.predict(_clean_inputs(train.images[:], config),
                                        batch_size=BATCH_SIZE, verbose=0)
    test_codes = model.encoder.predict(test_inputs, batch_size=BATCH_SIZE, verbose=0)
    labels = (train.labels, splits.test.labels)
    if splits.labelled:  # the probes need labels; a flat folder of images has none
        # A run trained on one normal class has no classes to tell apart: no probe (None).
        probe = len(np.unique(labels[0])) > 1
        metrics["linear_probe_accuracy"] = linear_probe_accuracy(
            train_codes, labels[0], test_codes, labels[1]) if probe else None
        metrics["knn_accuracy"] = knn_accuracy(
            train_codes, labels[0], test_codes, labels[1]) if probe else None
    report = {
        "metrics": metrics,
        "inputs": CLEAN_INPUTS,
        "data": splits.source,
        "test_images": len(splits.test),
        "probe_train_images": len(train),
        "knn_neighbours": KNN_NEIGHBOURS,
        "psnr_cap_db": PSNR_CAP_DB,
        "threshold": threshold,
    }
    if config.noise_factor > 0:
        report["training_test_metrics"] = (
            f"{TEST_METRICS} and training's Test line score inputs with noise_factor "
            f"{config.noise_factor:g} noise, not clean ones")
    if config.normal_classes is not None:
        report["anomaly"] = write_anomaly_report(
            model_dir, model, config, splits.test, threshold["threshold"],
            os.path.join(model_dir, ANOMALY_PLOT), os.path.join(model_dir, ANOMALY_EXTREMES),
            log=log, class_names=splits.class_names)
        report["anomaly"].update(normal_classes=config.normal_classes,
                                 normal_class_names=[splits.class_name(label)
                                                     for label in config.normal_classes],
                                 extremes=os.path.join(model_dir, ANOMALY_EXTREMES))
        if report["anomaly"]["auroc"] is not None:
            report["anomaly"]["plot"] = os.path.join(model_dir, ANOMALY_PLOT)
    if splits.masks is not None:
        from ..data.mvtec import read_masks
        from .defect_maps import localisation_report

        anomaly = report.get("anomaly", {})
        report["localisation"] = localisation_report(
            model, config, splits.test, read_masks(splits.masks, splits.image_shape),
            splits.class_names, os.path.join(model_dir, LOCALISATION_WORST), map_kind,
            map_sigma, anomaly.get("auroc_per_anomalous_class"))
        report["localisation"]["image_auroc"] = anomaly.get("auroc")
    if has_2d_code(model):
        report["latent_2d"] = os.path.join(model_dir, LATENT_2D)
        write_latent_2d(report["latent_2d"], model, test_codes, splits.test.labels,
                        config.data_format)
    write_json_atomic(os.path.join(model_dir, EVALUATION), report)
    return report


def _clean_inputs(images: np.ndarray, config: Config) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 in [0, 1], in the model's layout, without noise."""
    return noisy_inputs(images, 0.0, data_format=config.data_format)[0]


def format_table(report: dict) -> str:
    """The report as a two-column text table."""
    def shown(value):
        return "n/a" if value is None else f"{value:.4f}"

    m = report["metrics"]
    rows = [
        ("BCE (per pixel)", f"{m['bce']:.5f}"),
        ("MSE", f"{m['mse']:.5f}"),
        ("PSNR (dB)", f"{m['psnr']:.2f}"),
        ("SSIM", f"{m['ssim']:.4f}"),
    ]
    if "linear_probe_accuracy" in m:
        rows += [(f"linear probe accuracy ({report['probe_train_images']:,} train codes)",
                  shown(m["linear_probe_accuracy"])),
                 (f"{report['knn_neighbours']}-NN accuracy", shown(m["knn_accuracy"]))]
    else:
        rows.append(("linear probe and k-NN accuracy", "no labels"))
    anomaly = report.get("anomaly")
    if anomaly:
        rows += [
            (f"AUROC, normal {', '.join(anomaly['normal_class_names'])} vs the rest",
             shown(anomaly["auroc"])),
            ("AUPRC (anomalous positive)", shown(anomaly["auprc"])),
            ("false-positive rate at the threshold", shown(anomaly["fpr_at_threshold"])),
            ("true-positive rate at the threshold", shown(anomaly["tpr_at_threshold"])),
        ]
        rows += [(f"AUROC of class {label} alone", f"{value:.4f}")
                 for label, value in anomaly["auroc_per_anomalous_class"].items()]
    where = report.get("localisation")
    if where:
        maps = f"{where['map']} maps, sigma {where['sigma']:g}"
        rows += [(f"pixel AUROC ({maps})", shown(where["pixel_auroc"])),
                 (f"PRO to a {where['max_fpr']:.0%} false-positive rate", shown(where["pro"]))]
        for name, values in where["per_defect"].items():
            rows += [(f"{name}: image / pixel AUROC, PRO ({values['images']} images)",
                      " / ".join(shown(values[key])
                                 for key in ("image_auroc", "pixel_auroc", "pro")))]
    width = max(len(name) for name, _ in rows)
    lines = [f"{report['test_images']:,} test images of {report['data']}",
             f"inputs: {report['inputs']}"]
    lines += [f"{name:<{width}}  {value:>9}" for name, value in rows]
    if "training_test_metrics" in report:
        lines.append(f"({report['training_test_metrics']})")
    return "\n".join(lines)
