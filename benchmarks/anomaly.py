#!/usr/bin/env python
"""The one-class anomaly-detection protocol: each class in turn is normal, the others
anomalous. The autoencoder trains on the normal training images and scores the test split
by reconstruction error (as `tf-autoencoder evaluate` does), and on request in other ways
from the same trained model (--scores: SSIM, a distance in code space, a sum); classic
baselines are computed in the same run on the same splits: PCA reconstruction error and an
isolation forest on raw pixels. AUROC on the test split, mean and spread over seeds;
everything that is chosen (the baselines' sizes, the autoencoder's variant and score) is
chosen by AUROC on the validation split (the first 5,000 training images, all classes),
never on the test split.
A rerun keeps the hand-written reading below its section's table (after READING_MARK).

    python benchmarks/anomaly.py                      # Fashion-MNIST, 10 classes, 2 seeds
    python benchmarks/anomaly.py --quick --out /tmp/Q.md   # a smoke run on the MNIST sample

Writes its section of benchmarks/QUALITY.md (quality.py's report, other sections kept).
Fashion-MNIST's IDX files come with Debian's dataset-fashion-mnist package.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]
# The autoencoder's variants (--variants): name -> (settings that differ from the post's
# model, the column's label). MSE is the loss of the convolutional autoencoder baselines
# in the one-class literature (e.g. Deep SVDD's); a narrower code is their other advice.
AE_VARIANTS = {"bce": ({}, "AE, BCE (the post's)"),
               "mse": ({"loss": "mse"}, "AE, MSE"),
               "code16": ({"code_size": 16}, "AE, BCE, a 16-value code"),
               # The post's model is a denoising autoencoder; 0.3 as in the README's example.
               "code16_noise": ({"code_size": 16, "noise_factor": 0.3},
                                "AE, BCE, a 16-value code, denoising (noise 0.3)")}
# The scores of one trained model (--scores): name -> the column's label. "mse" is the
# score `evaluate` and the export compute. SSIM compares local means, contrasts and
# structure instead of single pixels (a 7x7 window suits 28x28 images); "code" is the
# Mahalanobis distance of an image's code to the Gaussian fitted on the codes of the
# normal training images (the anomaly may reconstruct well yet land off the normal
# codes), as `--anomaly_score code` scores and serves it; "mse+code" sums the two, each
# z-scored with the normal validation images' scores.
SCORES = {"mse": ("reconstruction MSE", "reconstruction MSE"),
          "ssim": ("1 - SSIM", "1 - SSIM between image and reconstruction (7x7 Gaussian "
                               "window, sigma 1)"),
          "code": ("code distance", "the Mahalanobis distance of the image's code to the "
                                    "Gaussian of the normal training images' codes (the "
                                    "package's --anomaly_score code)"),
          "mse+code": ("MSE + code distance", "the sum of those two, each z-scored with the "
                                              "normal validation images' scores")}
SSIM_FILTER = (7, 1.0)  # size, sigma
# What a rerun keeps of a section: everything after this line (the hand-written reading).
READING_MARK = "<!-- reading: written by hand; a rerun keeps what follows -->"
PCA_COMPONENTS = (8, 16, 32, 64)
FOREST_MAX_SAMPLES = (256, 1024)
# Published, class 0 (T-shirt/top) of Fashion-MNIST, mean of 5 seeds on balanced test
# sets: the Deep-MSVDD PyTorch implementation's README (CAE scored by reconstruction
# error; Deep SVDD).
PUBLISHED = [("convolutional autoencoder, reconstruction error", 0.9037),
             ("Deep SVDD", 0.8858)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=FASHION_MNIST, help="IDX files (default: Fashion-MNIST)")
    p.add_argument("--dataset", default=None, help="mnist_sample instead of --data_dir")
    p.add_argument("--classes", default=None, help="normal classes to run, e.g. 0,3 (default: all)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--variants", default="bce,mse",
                   help=f"autoencoder variants, of {', '.join(AE_VARIANTS)}; the last AE "
                        "column takes the (variant, score) the validation split chooses")
    p.add_argument("--scores", default="mse",
                   help=f"scores of each trained autoencoder, of {', '.join(SCORES)}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: MNIST sample, classes 0,1, one seed, one epoch")
    p.add_argument("--out", default=os.path.join(HERE, "QUALITY.md"))
    p.add_argument("--section", default=None, help="QUALITY.md section (default: from the data)")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.classes, args.seeds, args.epochs = "mnist_sample", "0,1", "0", 1
    for name, given, known in [("variant", args.variants, AE_VARIANTS),
                               ("score", args.scores, SCORES)]:
        unknown = [value for value in given.split(",") if value not in known]
        if unknown:
            p.error(f"unknown {name} {unknown[0]!r}: use {', '.join(known)}")
    return args


def auroc(normal: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(~normal, scores))


def autoencoder_scores(variant, train, evaluated, seed, epochs, batch_size):
    """Trains the post's model, with the settings of AE_VARIANTS[variant], on `train`
    (uint8), and returns its number of weights and, for `train` and each array of
    `evaluated`, {"mse": (N,), "ssim": (N,), "codes": (N, D)}."""
    import keras

    from tf_autoencoder.config import Config
    from tf_autoencoder.data.pipeline import make_training_epochs
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.training import compile_model

    keras.utils.set_random_seed(seed)
    config = Config(image_shape=list(train.shape[1:]), precision="float32", seed=seed,
                    **AE_VARIANTS[variant][0]).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    if config.noise_factor:  # the package's training pipeline: new noise each epoch
        model.fit(make_training_epochs(train, batch_size=batch_size, epochs=range(epochs),
                                       seed=seed, noise_factor=config.noise_factor),
                  epochs=epochs, steps_per_epoch=len(train) // batch_size, shuffle=False,
                  verbose=0)  # the dataset shuffles itself, every epoch
    else:
        pixels = train.astype(np.float32) / 255
        model.fit(pixels, pixels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return model.count_params(), [model_outputs(model, images) for images in [train, *evaluated]]


def model_outputs(model, images, batch_size=512) -> dict:
    """uint8 NHWC images -> each one's reconstruction MSE (as evaluate scores it: clean
    inputs in [0, 1] against sigmoid(logits)), 1 - SSIM, and code; a batch at a time."""
    import tensorflow as tf

    parts = {"mse": [], "ssim": [], "codes": []}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32) / 255
        codes = model.encoder(batch, training=False)
        pixels = tf.sigmoid(model.decoder(codes, training=False))
        parts["mse"].append(np.mean(np.square(batch - pixels.numpy()), axis=(1, 2, 3)))
        parts["ssim"].append(1 - tf.image.ssim(batch, pixels, max_val=1.0,
                                               filter_size=SSIM_FILTER[0],
                                               filter_sigma=SSIM_FILTER[1]).numpy())
        parts["codes"].append(codes.numpy().reshape(len(batch), -1))
    return {name: np.concatenate(values).astype(np.float64) for name, values in parts.items()}


def score_sets(outputs, val_normal, scores):
    """model_outputs of (train, validation, test) -> {score: (validation, test) arrays}.
    Combinations are z-scored with the normal validation images' scores alone."""
    from tf_autoencoder.run.anomaly import code_distances, code_gaussian

    _, val, test = outputs
    single = {"mse": (val["mse"], test["mse"]), "ssim": (val["ssim"], test["ssim"])}
    gaussian = code_gaussian([outputs[0]["codes"]])  # codes as the package's image_codes
    single["code"] = (code_distances(val["codes"], gaussian),
                      code_distances(test["codes"], gaussian))

    def z(pair):
        reference = pair[0][val_normal]
        return [(values - reference.mean()) / (reference.std() or 1) for values in pair]

    result = {}
    for score in scores:
        if "+" in score:
            parts = [z(single[name]) for name in score.split("+")]
            result[score] = (sum(part[0] for part in parts), sum(part[1] for part in parts))
        else:
            result[score] = single[score]
    return result


def pca_scores(components, train, evaluated):
    from sklearn.decomposition import PCA

    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255  # noqa: E731
    pca = PCA(n_components=components, random_state=0).fit(flat(train))
    return [np.mean(np.square(flat(x) - pca.inverse_transform(pca.transform(flat(x)))), axis=1)
            for x in evaluated]


def forest_scores(max_samples, seed, train, evaluated):
    from sklearn.ensemble import IsolationForest

    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255  # noqa: E731
    forest = IsolationForest(n_estimators=100, max_samples=min(max_samples, len(train)),
                             random_state=seed, n_jobs=1).fit(flat(train))
    return [-forest.score_samples(flat(x)) for x in evaluated]  # higher: more anomalous


def one_class(splits, normal_class, seed, args) -> dict:
    """Test AUROC of every method for one normal class and seed, and the choices the
    validation split made: {method: test AUROC, "choice <method>": value}."""
    from tf_autoencoder.data import sources

    train = sources.keep_classes(splits.train.images, splits.train.labels, [normal_class])[0]
    val, test = splits.validation, splits.test
    val_normal, test_normal = val.labels == normal_class, test.labels == normal_class
    evaluated = [val.images, test.images]
    result = {}
    for variant in args.variants.split(","):
        result[f"weights {variant}"], outputs = autoencoder_scores(
            variant, train, evaluated, seed, args.epochs, args.batch_size)
        for score, (val_scores, test_scores) in score_sets(
                outputs, val_normal, args.scores.split(",")).items():
            result[f"ae {variant} {score}"] = auroc(test_normal, test_scores)
            result[f"val ae {variant} {score}"] = auroc(val_normal, val_scores)
    variant, score = max(((variant, score) for variant in args.variants.split(",")
                          for score in args.scores.split(",")),
                         key=lambda pair: result["val ae {} {}".format(*pair)])
    result["ae tuned"] = result[f"ae {variant} {score}"]
    result["choice ae tuned"] = variant if "," not in args.scores else f"{variant}/{score}"
    for name, grid, scorer in [
            ("pca", PCA_COMPONENTS, lambda c: pca_scores(c, train, evaluated)),
            ("forest", FOREST_MAX_SAMPLES, lambda m: forest_scores(m, seed, train, evaluated))]:
        best = None
        for value in grid:
            val_scores, test_scores = scorer(value)
            val_auroc = auroc(val_normal, val_scores)
            if best is None or val_auroc > best[0]:
                best = (val_auroc, value, auroc(test_normal, test_scores))
        result[name], result[f"choice {name}"] = best[2], best[1]
    return result


def methods(args) -> list[tuple[str, str]]:
    """(result key, column label) of every method the run compares; a score is named in
    the label only when there is more than one."""
    scores = args.scores.split(",")
    return ([(f"ae {variant} {score}", f"AE {variant}, {SCORES[score][0]}" if len(scores) > 1
              else AE_VARIANTS[variant][1])
             for variant in args.variants.split(",") for score in scores]
            + [("ae tuned", "AE, " + ("variant" if len(scores) == 1 else "variant and score")
                + " chosen on validation"), ("pca", "PCA"), ("forest", "isolation forest")])


def report(results: dict, args, splits, names, seconds: float) -> str:
    """results: class -> [one_class() per seed]. A markdown section."""
    columns = methods(args)
    seeds = args.seeds.split(",")
    first = next(iter(results.values()))[0]
    weights = "; ".join(f"{variant}: {AE_VARIANTS[variant][1][4:]}, "
                        f"{first[f'weights {variant}']:,} weights"
                        for variant in args.variants.split(","))
    scores = args.scores.split(",")
    scoring = "scored by reconstruction MSE" if scores == ["mse"] else (
        f"each trained model scored {len(scores)} ways: "
        + "; ".join(SCORES[score][1] for score in scores))
    chosen = " and score" if len(scores) > 1 else ""
    lines = [f"## One-class anomaly detection: {splits.source}, {args.epochs} epochs\n",
             f"Command: `python benchmarks/anomaly.py {shlex.join(sys.argv[1:])}`".rstrip() + "\n",
             f"Each class in turn is normal: the models train on its training images "
             f"(about {len(splits.train) // 10:,} per class), and score all "
             f"{len(splits.test):,} test images (the other classes anomalous). Test AUROC, "
             f"mean ± standard deviation over seeds {', '.join(seeds)} (PCA is deterministic). "
             f"The autoencoder is the post's model ({weights}), {args.epochs} epochs at "
             f"batch {args.batch_size}, {scoring}. Chosen by AUROC on the "
             f"validation split ({len(splits.validation):,} images, all classes): PCA's "
             f"components ({', '.join(map(str, PCA_COMPONENTS))}), the forest's max_samples "
             f"({', '.join(map(str, FOREST_MAX_SAMPLES))}; 100 trees), the autoencoder's variant"
             f"{chosen} (last AE column). {seconds / 60:.0f} minutes on 2 shared CPU cores.\n",
             "| normal class | " + " | ".join(label for _, label in columns) + " |",
             "|---|" + "---:|" * len(columns)]

    def cell(values):
        values = np.asarray(values)
        return f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values[0]:.4f}"

    means = {key: [] for key, _ in columns}
    for label, runs in results.items():
        row = []
        for key, _ in columns:
            values = [run[key] for run in runs]
            means[key].append(np.mean(values))
            row.append(cell(values))
        lines.append(f"| {label} {names[label]} | " + " | ".join(row) + " |")
    best = max(means, key=lambda key: np.mean(means[key]))
    lines.append("| **mean over classes** | " + " | ".join(
        (f"**{np.mean(means[key]):.4f}**" if key == best else f"{np.mean(means[key]):.4f}")
        for key, _ in columns) + " |")
    choices = {name: [run[f"choice {name}"] for runs in results.values() for run in runs]
               for name in ("ae tuned", "pca", "forest")}
    lines.append("")
    lines.append("Choices the validation split made (over classes and seeds): " + "; ".join(
        f"{name}: " + ", ".join(f"{value} x{choices[name].count(value)}"
                                for value in sorted(set(choices[name]), key=str))
        for name in choices) + ".\n")
    lines.append("Published, class 0 (T-shirt/top) only, mean of 5 seeds on balanced test sets "
                 "(the Deep-MSVDD PyTorch implementation's README): "
                 + "; ".join(f"{name} {value:.4f}" for name, value in PUBLISHED) + ".\n")
    wins = {key: sum(1 for label in results if max(
        columns, key=lambda m: np.mean([r[m[0]] for r in results[label]]))[0] == key)
        for key, _ in columns}
    lines.append("Best mean test AUROC per class: " + ", ".join(
        f"{label} {wins[key]}" for key, label in columns if wins[key]) + ".\n")
    return "\n".join(lines)


def kept_reading(path: str, section: str) -> str:
    """What follows READING_MARK in `section` of the report at `path` ("\n" if nothing)."""
    from quality import SECTION

    if not os.path.exists(path):
        return "\n"
    with open(path) as f:
        text = dict(SECTION.findall(f.read())).get(section, "")
    return text.split(READING_MARK, 1)[1] if READING_MARK in text else "\n"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tf_autoencoder.data import sources

    splits = sources.load_data(args.dataset, None if args.dataset else args.data_dir)
    fashion = not args.dataset and "fashion" in args.data_dir
    classes = ([int(c) for c in args.classes.split(",")] if args.classes
               else sorted(set(splits.train.labels.tolist())))
    names = {c: FASHION_NAMES[c] if fashion else "" for c in classes}
    started = time.time()
    results = {}
    for normal_class in classes:
        results[normal_class] = []
        for seed in map(int, args.seeds.split(",")):
            run = one_class(splits, normal_class, seed, args)
            results[normal_class].append(run)
            print(f"class {normal_class} seed {seed}: " + ", ".join(
                f"{key} {run[key]:.4f}" for key, _ in methods(args)), flush=True)
    body = report(results, args, splits, names, time.time() - started)
    print(body)
    from quality import update_report

    section = args.section or ("anomaly-" + ("fashion-mnist" if fashion else
                                             (args.dataset or "idx")))
    update_report(args.out, section, f"{body}\n{READING_MARK}{kept_reading(args.out, section)}")
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
