#!/usr/bin/env python
"""Trains model variants on the same data and seed, evaluates each, and writes the
comparison into benchmarks/QUALITY.md with one reconstruction grid per variant.

    python benchmarks/quality.py --dataset mnist_sample --epochs 10
    python benchmarks/quality.py --data_dir /usr/share/datasets/fashion-mnist --epochs 3 \\
        --probe_samples 10000
    # The post's claim at full length, with the tutorial models at their own settings:
    python benchmarks/quality.py --data_dir /usr/share/datasets/fashion-mnist --epochs 50 \\
        --probe_samples 10000 --section fashion-mnist-full \\
        --variants conv,fc,tutorial_strided,tutorial_pooled,tutorial_linear

Each run replaces its section of QUALITY.md (--section; default: the data's name) and
keeps the others. The
Fashion-MNIST IDX files come with Debian's dataset-fashion-mnist package
(`sudo apt-get install dataset-fashion-mnist`).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

from tf_autoencoder.config import Config, RunFacts  # noqa: E402
from tf_autoencoder.files import write_text_atomic  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPARSE_L1 = 1e-3
# Training settings of the PyTorch tutorials, as we read them: Adam at a constant 0.001
# (no decay), MSE on the sigmoid outputs, their batch sizes and epochs.
TUTORIAL = {"loss": "mse", "lr_decay_rate": 1.0}
# name -> (Config settings that differ from the post's model, description). Settings may
# include their own loss, batch_size and epochs, which override --batch_size and --epochs.
VARIANTS = {
    "conv": ({}, "the post's model: max pooling, transposed convs"),
    "strided": ({"downsample": "strided"}, "stride-2 convs instead of max pooling"),
    "resize": ({"upsample": "resize"}, "nearest resize + conv instead of transposed convs"),
    "sparse": ({"code_l1": SPARSE_L1}, f"L1 penalty {SPARSE_L1:g} on the code"),
    "fc": ({"model": "fully_connected"}, "fully connected, 128-64-32 (also the Keras blog's "
                                         "deep autoencoder)"),
    "vae": ({"model": "variational"}, "variational, beta 1"),
    "tutorial_strided": (
        {"num_filters": [16, 32], "downsample": "strided", "convs_per_block": 0,
         "code_size": 12, "output_layer": False, "batch_size": 64, "epochs": 10, **TUTORIAL},
        "strided convs, a 12-value code (PyTorch tutorial)"),
    "tutorial_pooled": (
        {"num_filters": [16, 4], "convs_per_block": 1, "upsample": "transpose_2x2",
         "output_layer": False, "weight_decay": 0.0, "batch_size": 20, "epochs": 30,
         **TUTORIAL},
        "pooled convs, a 7x7x4 code (PyTorch course notebook)"),
    "tutorial_linear": (
        {"model": "fully_connected", "hidden_units": [32], "weight_decay": 0.0,
         "batch_size": 20, "epochs": 20, **TUTORIAL},
        "linear, a 32-value code (PyTorch course notebook)"),
}
POST_VARIANTS = ("conv", "strided", "resize", "sparse", "fc", "vae")
# The post: the convolutional model "achieves a similar performance" to the fully
# connected one. We call a metric similar when conv is better or at most this much worse.
SIMILAR = 0.05
NUM_SHOWN = 10
HEADER = """# Reconstruction and code quality of the model variants

Written by `benchmarks/quality.py`: every variant is trained on the same data with the
same seed, for the same epochs and batch size unless the table says otherwise (the
tutorial models train at their own settings), then evaluated on the test split as
`tf-autoencoder evaluate` does: BCE (per pixel value) and MSE between the
test images and the reconstructions, PSNR (dB, mean over images, capped at 100) and
SSIM (`tf.image.ssim`), and the accuracy of a linear probe (logistic regression on the
codes of training images, scored on the codes of the test images) and of a 5-nearest-
neighbour vote on the codes. The VAE reconstructs and encodes with its mean code.
Training time is the wall-clock time of training (fit, the test evaluation and saving),
measured one variant after another on the same machine; other work on it adds noise.

**Cross-check against the PyTorch reference.** `benchmarks/train_speed.py --seeds 3`
trains the default model and the PyTorch reference (the same function, initialisation
and optimiser) for the same epochs on Fashion-MNIST. After 3 epochs the mean test BCE
over three seeds was 0.2989 for ours and 0.2978 for PyTorch (+0.3%). See
[RESULTS.md](RESULTS.md).
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist_sample", help="TFDS name or mnist_sample")
    p.add_argument("--data_dir", default=None, help="folder of IDX files; overrides --dataset")
    p.add_argument("--variants", default=",".join(POST_VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_images", type=int, default=None,
                   help="train on the first N training images only (default: all)")
    p.add_argument("--test_images", type=int, default=None,
                   help="evaluate on the first N test images only (default: all)")
    p.add_argument("--probe_samples", type=int, default=None,
                   help="fit the linear probe and k-NN on N random training images (default: all)")
    p.add_argument("--section", default=None,
                   help="the name of this run's section of the report (default: the data's)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 epoch per variant on 256 training and 100 test images")
    p.add_argument("--out", default=os.path.join(HERE, "QUALITY.md"), help="the report")
    p.add_argument("--images_dir", default=os.path.join(HERE, "quality"),
                   help="where the reconstruction grids go (one folder per dataset)")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    if args.data_dir and not os.path.isdir(args.data_dir):
        p.error(f"{args.data_dir} does not exist; for Fashion-MNIST install Debian's "
                "package: sudo apt-get install dataset-fashion-mnist")
    return args


def dataset_label(args, splits) -> str:
    """A short name for the data, used for the section of QUALITY.md and the image folder."""
    if args.data_dir:
        return os.path.basename(os.path.normpath(args.data_dir))
    return splits.name


def run_variant(name, args, splits, work_dir, log):
    """Trains and evaluates one variant; returns its row of the table as a dict."""
    from keras import ops

    from tf_autoencoder.run.evaluation import evaluate_run
    from tf_autoencoder.serving.loading import load_finished_model
    from tf_autoencoder.images import image_grid, write_png
    from tf_autoencoder.model.precision import resolve_precision
    from tf_autoencoder.run.training import train

    settings, description = VARIANTS[name]
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, **settings}
    if args.quick:
        settings["epochs"] = 1
    asked = Config(dataset=splits.name, data_dir=args.data_dir, seed=args.seed,
                   model_dir=os.path.join(work_dir, name), **settings).validate()
    facts = RunFacts(image_shape=splits.image_shape, dataset=splits.name,
                     data_source=splits.source, seed=args.seed,
                     precision=resolve_precision(asked.precision))  # as the train command does
    config = asked.resolved(facts)
    log(f"--- {name}: {description}")
    start = time.perf_counter()
    train(asked, facts, splits, log=lambda *a: None)
    seconds = time.perf_counter() - start
    report = evaluate_run(config.model_dir, config, splits, probe_samples=args.probe_samples,
                          seed=args.seed)
    log(f"{name}: {seconds:.0f} s, " + ", ".join(
        f"{k} {v:.4f}" for k, v in report["metrics"].items()))

    model = load_finished_model(config.model_dir)
    shown = splits.test.images[:NUM_SHOWN].astype("float32") / 255  # NHWC, the default layout
    reconstructions = ops.convert_to_numpy(ops.sigmoid(model.predict(shown, verbose=0)))
    image_path = os.path.join(args.images_dir, args.label, f"{name}.png")
    write_png(image_path, image_grid([shown, reconstructions]))
    return dict(name=name, description=description, report=report, seconds=seconds,
                weights=model.count_params(), image=image_path, config=config)


def section(args, splits, rows, argv) -> str:
    """The markdown for one run: how it was made, the table, and the post's claim."""
    out_dir = os.path.dirname(os.path.abspath(args.out))
    report = rows[0]["report"]
    epochs = sorted({row["config"].epochs for row in rows})
    title = (f"{epochs[0]} epoch{'s' * (epochs[0] != 1)}" if len(epochs) == 1
             else "each variant's own epochs")
    precisions = ", ".join(sorted({row["config"].precision for row in rows}))
    lines = [
        f"## {args.label}: {title}",
        "",
        f"Command: `python benchmarks/quality.py {shlex.join(argv)}`",
        "",
        f"Data: {splits.source}; {len(splits.train):,} training images, "
        f"{report['test_images']:,} test images. Seed {args.seed}; unless the variant sets its "
        f"own, the post's settings (Adam 0.001 x 0.96 every 1,000 steps, weight decay 1e-5, "
        f"no noise). Precision: {precisions}. Linear probe and k-NN fitted on the codes of "
        f"{report['probe_train_images']:,} training images. CPU, {os.cpu_count()} cores.",
        "",
        "| variant | what | weights | loss | batch | epochs | training (s) | BCE | MSE "
        "| PSNR (dB) | SSIM | linear probe | 5-NN | reconstructions |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        m, config = row["report"]["metrics"], row["config"]
        image = os.path.relpath(row["image"], out_dir)
        lines.append(
            f"| {row['name']} | {row['description']} | {row['weights']:,} | {config.loss} | "
            f"{config.batch_size} | {config.epochs} | "
            f"{row['seconds']:.0f} | {m['bce']:.4f} | {m['mse']:.4f} | {m['psnr']:.2f} | "
            f"{m['ssim']:.3f} | {m['linear_probe_accuracy']:.3f} | {m['knn_accuracy']:.3f} | "
            f"[png]({image}) |")
    lines += ["", "Each picture: test images (top) and their reconstructions (bottom).", ""]
    by_name = {row["name"]: row for row in rows}
    if "conv" in by_name and "fc" in by_name:
        lines += [claim(by_name["conv"], by_name["fc"]), ""]
    return "\n".join(lines)


# metric -> whether lower is better
CLAIM_METRICS = {"bce": True, "mse": True, "psnr": False, "ssim": False,
                 "linear_probe_accuracy": False, "knn_accuracy": False}


def claim(conv, fc) -> str:
    """One paragraph: does the conv model perform similarly to the fully connected one?"""
    similar, worse, parts = [], [], []
    for metric, lower_is_better in CLAIM_METRICS.items():
        a, b = conv["report"]["metrics"][metric], fc["report"]["metrics"][metric]
        shortfall = (a - b) / abs(b) if lower_is_better else (b - a) / abs(b)  # > 0: conv worse
        (worse if shortfall > SIMILAR else similar).append(metric)
        parts.append(f"{metric} {a:.4g} vs {b:.4g}")
    verdict = ("holds on every metric" if not worse else
               f"holds on {', '.join(similar) or 'no metric'}; not on {', '.join(worse)}")
    return (f"**The post's claim.** With {conv['weights']:,} weights against "
            f"{fc['weights']:,} ({fc['weights'] / conv['weights']:.0f}x fewer), the "
            f"convolutional model (conv) against the fully connected one (fc), after "
            f"{conv['config'].epochs} and {fc['config'].epochs} epochs: {'; '.join(parts)}. "
            f"Counting a metric as similar when conv is better or at most {SIMILAR:.0%} worse, "
            f"the claim {verdict}.")


SECTION = re.compile(r"<!-- section: (\S+) -->\n(.*?)<!-- end section -->\n", re.S)


def update_report(path: str, label: str, body: str) -> None:
    """Writes HEADER and every dataset's section, replacing `label`'s with `body`."""
    sections = {}
    if os.path.exists(path):
        with open(path) as f:
            sections = dict(SECTION.findall(f.read()))
    sections[label] = body
    text = HEADER + "".join(f"\n<!-- section: {name} -->\n{text}<!-- end section -->\n"
                            for name, text in sections.items())
    write_text_atomic(path, text)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import tensorflow as tf

    from tf_autoencoder.data import sources

    tf.get_logger().setLevel("ERROR")  # predict() on each new model warns about retracing
    splits = sources.load_data(args.dataset, args.data_dir)
    if args.train_images:
        splits.train = sources.Split(splits.train.images[:args.train_images],
                                      splits.train.labels[:args.train_images])
    if args.test_images:
        splits.test = sources.Split(splits.test.images[:args.test_images],
                                     splits.test.labels[:args.test_images])
    if args.quick:
        splits.train = sources.Split(splits.train.images[:256], splits.train.labels[:256])
        splits.test = sources.Split(splits.test.images[:100], splits.test.labels[:100])
    args.label = args.section or dataset_label(args, splits)
    with tempfile.TemporaryDirectory() as work_dir:
        rows = [run_variant(name, args, splits, work_dir, print)
                for name in args.variants.split(",")]
    update_report(args.out, args.label, section(args, splits, rows, argv))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
