#!/usr/bin/env python
"""Photographs: the autoencoder against PCA at its own code size, on held-out regions.

Real photographs that ship inside packages (scikit-image's astronaut, chelsea, coffee,
rocket, hubble_deep_field, retina and immunohistochemistry; scikit-learn's china and
flower) are cut into square RGB patches and written as PNG files into a folder,
DIR/train|validation|test/<photograph>/, which the package's own folder source reads.
Each photograph's columns are split into regions: the left 70% gives the training
patches (overlapping by half), the next 10% the validation patches and the right 20%
the test patches (side by side), so no test patch shares a pixel with a training one.
Patches of almost one colour (pixel standard deviation below MIN_STD, black sky and
background) are left out: there is nothing in them to learn.

For each model: trained by the package (`tf-autoencoder train`'s code), its test PSNR
and SSIM as `evaluate` computes them, beside PCA with as many components as the model's
code has values, fitted on the same training patches; and the training time. Then the
code score (--anomaly_score code) against the reconstruction score on china (normal)
against flower, with the codes' Gaussian estimated as the package does (OAS shrinkage)
and as it did before (a 1e-3 ridge). Last, Fashion-MNIST: PCA at the code sizes of the
models quality.py measures, and the model recommended at the post's code size (128
values, the linear path started at PCA: FASHION_MODEL) trained beside it.

    pip install -e .[benchmarks]               # scikit-image, for its photographs
    python benchmarks/photos.py                # about an hour on 2 CPU cores (the 64x64
                                               # china / flower models take most of it)
    python benchmarks/photos.py --quick --out /tmp/Q.md   # a smoke run, a few minutes
    python benchmarks/photos.py --skip reconstruction,fashion --anomaly_size 32 \
        --anomaly_models 'chosen;post'         # the china / flower section at 32x32

Writes its sections of benchmarks/QUALITY.md (quality.py's report, other sections kept;
the hand-written reading below each table is kept too) and the pictures under
benchmarks/quality/photos/.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SKIMAGE_PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                       "retina", "immunohistochemistry")
# Each split's share of a photograph's columns, left to right.
REGIONS = {"train": (0.0, 0.7), "validation": (0.7, 0.8), "test": (0.8, 1.0)}
MIN_STD = 0.02  # of pixel values in [0, 1]
MAX_TRAIN_PER_PHOTO = 1500  # so that the large retina and hubble images do not dominate
MAX_HELD_OUT_PER_PHOTO = 60
SHOWN = 8
# The models compared: name -> (train's flags as settings, description). "chosen" is
# what `train --data_dir DIR` chooses for the folder with no flag (image_defaults.py).
MODELS = {
    "post": ({}, "the post's model and settings (16,8,8, batch 256, 50 epochs), as "
                 "`train` ran on a folder before it chose settings"),
    "chosen": (None, "what `train --data_dir DIR` chooses for these images, no flag"),
}
# The models of the code-score section, by the settings given as the post's (the rest
# chosen): its model as the README's command trained it, and trained with the settings
# chosen for the images (its 512-value code kept: more values than normal images).
ANOMALY_MODELS = {
    "post": ("batch_size", "epochs", "lr_decay_steps", "lr_decay_rate", "loss", "num_filters",
             "downsample", "code_size"),
    "post, chosen training": ("num_filters", "downsample", "code_size"),
    "chosen": (),
}
# Fashion-MNIST: code values -> the model of quality.py's fashion-mnist-full section.
FASHION_CODES = {12: "tutorial_strided", 32: "tutorial_linear", 128: "conv (the post's)",
                 196: "tutorial_pooled"}
# The model recommended for Fashion-MNIST at the post's code size (128 values), trained
# here: the linear path started at PCA, the photographs' stride-2 blocks, MSE, batch 64
# for 2 epochs (1,718 updates) with the rate halved 8 times over them.
FASHION_MODEL = dict(num_filters=[32, 64], downsample="strided", code_size=128,
                     linear_path="pca", loss="mse", batch_size=64, epochs=2,
                     lr_decay_steps=214, lr_decay_rate=0.5)
READING_MARK = "<!-- reading: written by hand; a rerun keeps what follows -->"


def photographs() -> dict:
    """name -> (H, W, 3) uint8, the colour photographs scikit-image and scikit-learn ship."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = {name: getattr(skimage.data, name)() for name in SKIMAGE_PHOTOGRAPHS}
    sample = load_sample_images()
    for path, image in zip(sample.filenames, sample.images):
        images[os.path.splitext(os.path.basename(path))[0]] = image
    return images


def patches(image: np.ndarray, size: int, split: str, limit: int, rng,
            held_out_stride: int | None = None) -> np.ndarray:
    """The patches of `split`'s region of `image` (training: every size // 2 pixels;
    held out: every `held_out_stride`, by default side by side), without the flat ones,
    at most `limit` drawn at random."""
    height, width = image.shape[:2]
    low, high = (int(share * width) for share in REGIONS[split])
    stride = size // 2 if split == "train" else held_out_stride or size
    cut = np.array([image[top:top + size, left:left + size]
                    for top in range(0, height - size + 1, stride)
                    for left in range(low, high - size + 1, stride)])
    if not len(cut):
        return cut
    cut = cut[cut.reshape(len(cut), -1).std(axis=1) >= MIN_STD * 255]
    if len(cut) > limit:
        cut = cut[np.sort(rng.choice(len(cut), limit, replace=False))]
    return cut


def write_patch_folder(root: str, size: int, names=None, train_limit=MAX_TRAIN_PER_PHOTO,
                       held_out_limit=MAX_HELD_OUT_PER_PHOTO, seed: int = 0,
                       held_out_stride: int | None = None) -> dict:
    """Writes root/<split>/<photograph>/<n>.png; returns {split: count}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(REGIONS, 0)
    for name, image in photographs().items():
        if names and name not in names:
            continue
        for split in REGIONS:
            limit = train_limit if split == "train" else held_out_limit
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i, patch in enumerate(patches(image, size, split, limit, rng,
                                              held_out_stride)):
                Image.fromarray(patch).save(os.path.join(folder, f"{i:05d}.png"))
                counts[split] += 1
    return counts


def metrics(images: np.ndarray, pixels: np.ndarray) -> dict:
    """PSNR and SSIM as `evaluate` computes them (reconstruction_metrics), of
    reconstructions given as pixels in [0, 1]."""
    from tf_autoencoder.run.evaluation import reconstruction_metrics

    clipped = np.clip(pixels.astype(np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(clipped / (1 - clipped))  # sigmoid gives the pixels back
    found = reconstruction_metrics(images, logits.astype(np.float32))
    return {"psnr": found["psnr"], "ssim": found["ssim"]}


def pca_pixels(components: int, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    pca = PCA(n_components=min(components, *flat(train).shape), random_state=0).fit(flat(train))
    return pca.inverse_transform(pca.transform(flat(test))).reshape(test.shape)


def train_model(name, asked_settings, splits, data_dir, work_dir, seed, quick):
    """Trains one model as `train --data_dir DIR <flags>` does; returns its row."""
    import keras

    from tf_autoencoder import image_defaults
    from tf_autoencoder.config import Config, RunFacts
    from tf_autoencoder.model.precision import resolve_precision
    from tf_autoencoder.run.training import train
    from tf_autoencoder.serving.loading import load_finished_model

    if quick:
        asked_settings = {**(asked_settings or {}), "epochs": 1}
    given = dict(asked_settings or {})
    asked = Config(data_dir=data_dir, seed=seed, embedding_images=0,
                   model_dir=os.path.join(work_dir, name), **(asked_settings or {})).validate()
    if name == "post":  # the post's settings, as before any choice
        chosen, because = {}, []
    else:
        chosen, because = image_defaults.choose(splits.image_shape, len(splits.train), given)
    facts = RunFacts(image_shape=list(splits.image_shape), dataset=splits.name,
                     data_source=splits.source, seed=seed,
                     precision=resolve_precision(asked.precision), chosen=chosen or None,
                     chosen_because=because or None)
    config = asked.resolved(facts)
    print(f"--- {name}: " + (image_defaults.describe(chosen, because, splits.image_shape,
                                                      len(splits.train)) if chosen else
                             "nothing chosen"), flush=True)
    start = time.perf_counter()
    train(asked, facts, splits, log=lambda *a: None)
    seconds = time.perf_counter() - start
    model = load_finished_model(config.model_dir)
    test = splits.test.images[:].astype(np.float32) / 255
    pixels = keras.ops.convert_to_numpy(keras.ops.sigmoid(model.predict(test, verbose=0)))
    code = int(np.prod(model.encoder.output_shape[1:]))
    updates = (len(splits.train) // config.batch_size) * config.epochs
    return dict(name=name, config=config, seconds=seconds, code=code, updates=updates,
                weights=model.count_params(), pixels=pixels, **metrics(test, pixels))


def reconstruction_section(args, argv) -> tuple[str, list]:
    """Trains MODELS on the patches of args.size; the markdown section and the rows."""
    from tf_autoencoder.data import sources
    from tf_autoencoder.images import image_grid, write_png

    with tempfile.TemporaryDirectory() as work_dir:
        data_dir = os.path.join(work_dir, "photos")
        limits = dict(train_limit=120, held_out_limit=10) if args.quick else {}
        counts = write_patch_folder(data_dir, args.size, **limits)
        splits = sources.load_data(data_dir=data_dir, log=lambda *a: None)
        print(f"{splits.source}: {counts}", flush=True)
        rows = [train_model(name, settings, splits, data_dir, work_dir, args.seed, args.quick)
                for name, (settings, _) in MODELS.items()]
        train = splits.train.images[:].astype(np.float32) / 255
        test = splits.test.images[:].astype(np.float32) / 255
        for row in rows:
            start = time.perf_counter()
            pca = pca_pixels(row["code"], train, test)
            row["pca_seconds"] = time.perf_counter() - start
            row["pca"] = metrics(test, pca)
            row["pca_pixels"] = pca
        # The test patches shown: spread over the photographs.
        shown = np.linspace(0, len(test) - 1, SHOWN).astype(int)
        grid_rows = [test[shown]] + [x for row in rows for x in
                                     (row["pixels"][shown], row["pca_pixels"][shown])]
        image = os.path.join(args.images_dir, f"reconstructions-{args.size}.png")
        write_png(image, image_grid(grid_rows))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    lines = [
        f"## Photographs, {args.size}x{args.size} patches: the autoencoder against PCA at its "
        "code size",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/photos.py', *argv])}`",
        "",
        f"Data: {counts['train']:,} training, {counts['validation']:,} validation and "
        f"{counts['test']:,} test patches of {args.size}x{args.size} RGB from "
        f"{len(photographs())} photographs ({', '.join(photographs())}); the test patches "
        "come from the right fifth of each photograph, which no training patch overlaps. "
        f"Seed {args.seed}, {rows[0]['config'].precision} (`--precision auto` on this CPU). "
        "PSNR (dB, mean over test patches) and SSIM as `evaluate` "
        "computes them. PCA: as many components as the model's code has values, fitted on "
        f"the same training patches. {time.strftime('%Y-%m-%d')}, CPU, {os.cpu_count()} "
        "cores, shared with other work (times are rough).",
        "",
        "| model | what | weights | code values | loss | batch | epochs | updates | "
        "training (s) | PSNR (dB) | SSIM | PCA, same code size: PSNR | SSIM | "
        "autoencoder - PCA (dB) |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        config = row["config"]
        lines.append(
            f"| {row['name']} | {MODELS[row['name']][1]}: filters "
            f"{','.join(map(str, config.num_filters))}, {config.downsample}"
            f"{', linear path started at PCA' if config.linear_path == 'pca' else ''} | "
            f"{row['weights']:,} | {row['code']:,} | {config.loss} | {config.batch_size} | "
            f"{config.epochs} | {row['updates']:,} | {row['seconds']:.0f} | {row['psnr']:.2f} | "
            f"{row['ssim']:.3f} | {row['pca']['psnr']:.2f} | {row['pca']['ssim']:.3f} | "
            f"{row['psnr'] - row['pca']['psnr']:+.2f} |")
    lines += ["", f"![reconstructions]({os.path.relpath(image, out_dir)})", "",
              "The picture: test patches (top row), then for each model in the table's order "
              "its reconstructions and PCA's at its code size.", ""]
    return "\n".join(lines), rows


def ridge_gaussian(codes: np.ndarray) -> dict:
    """The codes' Gaussian as the package estimated it before OAS: the sample covariance
    plus 1e-3 times its mean variance on the diagonal."""
    covariance = np.cov(codes, rowvar=False)
    ridge = 1e-3 * (float(np.mean(np.diag(covariance))) or 1.0)
    return {"mean": codes.mean(axis=0),
            "precision": np.linalg.inv(covariance + ridge * np.eye(len(covariance)))}


def anomaly_section(args, argv) -> str:
    """china normal, flower anomalous: test AUROC of the reconstruction score and of the
    code score with either Gaussian, for ANOMALY_MODELS."""
    import keras
    from sklearn.metrics import roc_auc_score

    from tf_autoencoder import image_defaults
    from tf_autoencoder.config import DEFAULTS, Config
    from tf_autoencoder.data import sources
    from tf_autoencoder.model.linear_path import start_at_pca
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.anomaly import (code_distances, code_gaussian, image_codes,
                                            reconstruction_scores)
    from tf_autoencoder.run.training import compile_model

    size = args.anomaly_size
    with tempfile.TemporaryDirectory() as work_dir:
        # Held-out patches overlap each other (not the training ones), for enough of them.
        counts = write_patch_folder(work_dir, size, names=("china", "flower"),
                                    held_out_limit=10_000, held_out_stride=size // 4)
        splits = sources.select_normal(sources.load_data(data_dir=work_dir, log=lambda *a: None),
                                       [0])  # class 0: china (sorted names)
        train = splits.train.images[:]
        test, labels = splits.test.images[:], splits.test.labels
    anomalous = labels != 0
    results = {}
    seeds = [args.seed] if args.quick else [args.seed, args.seed + 1]
    for name in args.anomaly_models.split(";"):
        given = {setting: DEFAULTS[setting] for setting in ANOMALY_MODELS[name]}
        chosen, _ = image_defaults.choose(list(train.shape[1:]), len(train), given)
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            config = Config(image_shape=list(train.shape[1:]), precision="float32", seed=seed,
                            **chosen).validate()
            if args.quick:
                config.epochs = 1
            model = build_autoencoder(config)
            if config.linear_path == "pca":  # as a fresh training run starts it
                start_at_pca(model, train, seed)
            compile_model(model, config)
            pixels = train.astype(np.float32) / 255
            start = time.perf_counter()
            model.fit(pixels, pixels, batch_size=min(config.batch_size, len(train)),
                      epochs=config.epochs, shuffle=True, verbose=0)
            seconds = time.perf_counter() - start
            codes = np.concatenate(list(image_codes(model, train, config.data_format)))
            test_codes = np.concatenate(list(image_codes(model, test, config.data_format)))
            gaussian = code_gaussian([codes])
            scores = {
                "reconstruction": reconstruction_scores(model, test, config.data_format),
                "code": code_distances(test_codes, gaussian),
                "code, ridge": code_distances(test_codes, ridge_gaussian(codes)),
            }
            row = results.setdefault(name, {"code values": codes.shape[1], "config": config,
                                            "seconds": [], "shrinkage": []})
            row["seconds"].append(seconds)
            row["shrinkage"].append(gaussian["shrinkage"])
            for score, values in scores.items():
                row.setdefault(score, []).append(roc_auc_score(anomalous, values))
            print(f"anomaly {name} seed {seed}: " + ", ".join(
                f"{score} {row[score][-1]:.3f}" for score in scores), flush=True)

    def cell(values):
        return " / ".join(f"{value:.3f}" for value in values)

    lines = [
        f"## Photographs, china against flower ({size}x{size}): the code score and the "
        "reconstruction score",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/photos.py', *argv])}`",
        "",
        f"china's {size}x{size} patches are normal, flower's anomalous: the models train on "
        f"the {len(train):,} china training patches and score the {len(test):,} test "
        f"patches ({int(np.sum(~anomalous)):,} china, {int(np.sum(anomalous)):,} flower; "
        f"from the right fifth of each photograph, every {size // 4} pixels). Test AUROC "
        "for seeds "
        f"{', '.join(map(str, seeds))}: the reconstruction score; the code score as "
        "`--anomaly_score code` computes it (the codes' covariance shrunk by OAS); and the "
        "same distance with the covariance of before (sample covariance plus 1e-3 x its mean "
        f"variance). {time.strftime('%Y-%m-%d')}, CPU, {os.cpu_count()} cores.",
        "",
        "| model | code values | training images | loss | batch | epochs | training (s) | "
        "reconstruction | code (OAS) | OAS shrinkage | code (ridge, before) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        config = row["config"]
        lines.append(
            f"| {name} | {row['code values']:,} | {len(train):,} | {config.loss} | "
            f"{min(config.batch_size, len(train))} | {config.epochs} | "
            f"{np.mean(row['seconds']):.0f} | {cell(row['reconstruction'])} | "
            f"{cell(row['code'])} | {cell(row['shrinkage'])} | {cell(row['code, ridge'])} |")
    return "\n".join(lines) + "\n"


def fashion_section(args, argv) -> str:
    """PCA on Fashion-MNIST at the code sizes of the models quality.py measured (the
    post's 128 values, the tutorials' 12, 32 and 196): their figures are in the
    fashion-mnist-full section, on the same split."""
    from tf_autoencoder.data import sources

    splits = sources.load_data(data_dir=args.fashion_dir)
    train = splits.train.images[:].astype(np.float32) / 255
    test = splits.test.images[:].astype(np.float32) / 255
    if args.quick:
        train, test = train[:2000], test[:500]
    with tempfile.TemporaryDirectory() as work_dir:
        row = train_model("fashion", FASHION_MODEL, splits, args.fashion_dir, work_dir,
                          args.seed, args.quick)
    config = row["config"]
    lines = [
        "## Fashion-MNIST: PCA at the code sizes of the models above, and the linear path",
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/photos.py', *argv])}`",
        "",
        f"PCA fitted on the {len(train):,} training images of {splits.source}, scored on "
        f"the {len(test):,} test images as `evaluate` scores a model (PSNR, SSIM). The "
        "models' figures, at their own code sizes, are those of the fashion-mnist-full "
        "section (quality.py, the same split), but for the linear path's row, trained here: "
        f"`{' '.join(f'--{k} ' + (','.join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in FASHION_MODEL.items())}`"
        f" ({row['updates']:,} updates, {row['seconds']:.0f} s of training on "
        f"{os.cpu_count()} CPU cores shared with other work, seed {args.seed}). "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| code values | the model of that code size | model: PSNR (dB) | SSIM | "
        "PCA: PSNR (dB) | SSIM | model - PCA (dB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for components, model in FASHION_CODES.items():
        found = metrics(test, pca_pixels(components, train, test))
        lines.append(f"| {components} | {model} (fashion-mnist-full) | | | {found['psnr']:.2f} | "
                     f"{found['ssim']:.3f} | |")
        if components == row["code"]:
            lines.append(
                f"| {components} | linear path started at PCA: filters "
                f"{','.join(map(str, config.num_filters))}, {config.downsample}, "
                f"{row['weights']:,} weights | {row['psnr']:.2f} | {row['ssim']:.3f} | "
                f"{found['psnr']:.2f} | {found['ssim']:.3f} | {row['psnr'] - found['psnr']:+.2f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def kept_reading(path: str, section: str) -> str:
    from anomaly import kept_reading as kept

    return kept(path, section)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32, help="patch size (square)")
    p.add_argument("--anomaly_size", type=int, default=64,
                   help="patch size of the china / flower section")
    p.add_argument("--anomaly_models", default="post;chosen",
                   help="models of the china / flower section, separated by ';', of "
                        + "; ".join(ANOMALY_MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="",
                   help="sections to leave out: reconstruction,anomaly,fashion")
    p.add_argument("--fashion_dir", default="/usr/share/datasets/fashion-mnist",
                   help="Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: few patches, one epoch per model")
    p.add_argument("--out", default=os.path.join(HERE, "QUALITY.md"))
    p.add_argument("--images_dir", default=os.path.join(HERE, "quality", "photos"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from quality import update_report

    if "reconstruction" not in args.skip:
        body, _ = reconstruction_section(args, argv)
        section = f"photos-{args.size}"
        update_report(args.out, section,
                      f"{body}\n{READING_MARK}{kept_reading(args.out, section)}")
        print(body, flush=True)
    if "anomaly" not in args.skip:
        body = anomaly_section(args, argv)
        section = "photos-anomaly" + ("" if args.anomaly_size == 64 else f"-{args.anomaly_size}")
        update_report(args.out, section,
                      f"{body}\n{READING_MARK}{kept_reading(args.out, section)}")
        print(body, flush=True)
    if "fashion" not in args.skip and os.path.isdir(args.fashion_dir):
        body = fashion_section(args, argv)
        section = "photos-fashion-pca"
        update_report(args.out, section,
                      f"{body}\n{READING_MARK}{kept_reading(args.out, section)}")
        print(body, flush=True)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
