#!/usr/bin/env python
"""Where the defect is: the autoencoder's anomaly maps against PCA residual maps, on
textures with synthetic defects, in the MVTec AD layout.

The three 512x512 grey textures scikit-image ships (brick, grass, gravel) are each cut
into square patches: the training patches from the top half, the test patches from the
bottom half (no test patch shares a pixel with a training one). Half the test patches get
a synthetic defect, and its exact mask: a patch of another of the textures, a scratch (a
thin bright or dark line), a blob (a stain that darkens or lightens an ellipse) or spots
(small bright or dark discs). Each texture is written as an MVTec AD category,
CATEGORY/train/good, test/good, test/<defect>, ground_truth/<defect>/<n>_mask.png, and
goes through the package's own commands: `tf-autoencoder train --data_dir CATEGORY`
(the settings chosen for the images, a shorter --epochs), then `evaluate` with each map
kind. PCA with as many components as the model's code has values is fitted on the same
training patches; its residual maps are smoothed as the model's are (maps.anomaly_map).

    pip install -e .[benchmarks]        # scikit-image, for its textures
    python benchmarks/maps.py           # about 30 minutes on 2 shared CPU cores
    python benchmarks/maps.py --quick --out /tmp/Q.md --figure_dir /tmp/fig   # smoke run

Writes its section of benchmarks/QUALITY.md (the hand-written reading below the table is
kept) and the overlay picture docs/anomaly/maps_<texture>.png.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "blob", "spots", "texture")
SIZE = 32  # patch side, pixels


def texture(name: str) -> np.ndarray:
    """(512, 512) uint8: scikit-image's grey texture of that name."""
    import skimage.data

    return getattr(skimage.data, name)()


def random_patches(image: np.ndarray, rows: tuple[int, int], count: int, size: int,
                   rng) -> np.ndarray:
    """`count` patches (count, size, size) at random places within image[rows[0]:rows[1]]."""
    tops = rng.integers(rows[0], rows[1] - size + 1, count)
    lefts = rng.integers(0, image.shape[1] - size + 1, count)
    return np.array([image[t:t + size, l:l + size] for t, l in zip(tops, lefts)])


def _ellipse(size: int, rng, smallest: float, largest: float) -> np.ndarray:
    """A filled ellipse at a random place and angle, as a bool (size, size) mask."""
    from skimage.draw import ellipse

    radii = rng.uniform(smallest, largest, 2) * size
    centre = rng.uniform(0.25, 0.75, 2) * size
    mask = np.zeros((size, size), bool)
    mask[ellipse(*centre, *radii, shape=mask.shape, rotation=rng.uniform(0, np.pi))] = True
    return mask


def add_defect(patch: np.ndarray, kind: str, rng, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(defective patch, its mask: the pixels the defect changed) for one of DEFECTS;
    `other`: a patch of another texture, of the same size, for "texture"."""
    from skimage.draw import disk, polygon

    size = len(patch)
    out = patch.astype(np.float64)
    bright = rng.random() < 0.5
    if kind == "scratch":  # a thin straight line, 1 to 2 pixels wide, a third to 2/3 long
        length, width = rng.uniform(size / 3, 2 * size / 3), rng.uniform(1.0, 2.0)
        angle = rng.uniform(0, np.pi)
        centre = rng.uniform(0.3, 0.7, 2) * size
        along = np.array([np.sin(angle), np.cos(angle)]) * length / 2
        across = np.array([np.cos(angle), -np.sin(angle)]) * width / 2
        corners = np.array([centre - along - across, centre - along + across,
                            centre + along + across, centre + along - across])
        mask = np.zeros((size, size), bool)
        mask[polygon(corners[:, 0], corners[:, 1], mask.shape)] = True
        out[mask] = rng.uniform(220, 255) if bright else rng.uniform(0, 35)
    elif kind == "blob":  # a stain: the texture kept, darkened or lightened
        mask = _ellipse(size, rng, 0.08, 0.2)
        factor = rng.uniform(0.35, 0.6)
        out[mask] = 255 - (255 - out[mask]) * factor if bright else out[mask] * factor
    elif kind == "spots":  # one to three small discs, each bright or dark
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            spot = np.zeros_like(mask)
            spot[disk(rng.uniform(0.15, 0.85, 2) * size, rng.uniform(1.5, 3.5), shape=mask.shape)] = True
            out[spot] = 255.0 if rng.random() < 0.5 else 0.0
            mask |= spot
    elif kind == "texture":  # another texture shows through an ellipse
        mask = _ellipse(size, rng, 0.1, 0.25)
        out[mask] = other[mask]
    else:
        raise ValueError(f"unknown defect {kind}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask


def write_category(root: str, name: str, train_count: int, test_count: int,
                   size: int = SIZE, defects=DEFECTS, seed: int = 0) -> dict:
    """Writes texture `name` as an MVTec AD category in root/name: `train_count` training
    patches from the top half, `test_count` test patches from the bottom half, half of
    them defect-free and the rest shared among `defects`, with their masks. Returns
    {"train": n, "good": n, <defect>: n}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = texture(name)
    half = image.shape[0] // 2
    others = [texture(other) for other in TEXTURES if other != name]
    category = os.path.join(root, name)
    counts = {"train": train_count}

    def save(array, *parts):
        path = os.path.join(category, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(array).save(path)

    for i, patch in enumerate(random_patches(image, (0, half), train_count, size, rng)):
        save(patch, "train", "good", f"{i:04d}.png")
    test = random_patches(image, (half, image.shape[0]), test_count, size, rng)
    good = test_count - test_count // 2
    counts["good"] = good
    for i, patch in enumerate(test[:good]):
        save(patch, "test", "good", f"{i:04d}.png")
    for i, patch in enumerate(test[good:]):
        kind = defects[i % len(defects)]
        other = random_patches(others[rng.integers(len(others))], (0, image.shape[0]), 1, size,
                               rng)[0]
        defective, mask = add_defect(patch, kind, rng, other)
        number = f"{i // len(defects):04d}"
        save(defective, "test", kind, f"{number}.png")
        save(mask.astype(np.uint8) * 255, "ground_truth", kind, f"{number}_mask.png")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# --- the benchmark ----------------------------------------------------------------------

SECTION = "maps-textures"
READING_MARK = "<!-- reading: written by hand; a rerun keeps what follows -->"
# Pixel-level ROC AUC of the MVTec AD paper's autoencoders on its five texture categories
# (Bergmann, Fauser, Sattlegger and Steger, CVPR 2019, Table 3, the area under the ROC
# curve of the segmentation): (AE scored by SSIM, AE scored by L2).
PUBLISHED = {"carpet": (0.87, 0.59), "grid": (0.94, 0.90), "leather": (0.78, 0.75),
             "tile": (0.59, 0.51), "wood": (0.73, 0.73)}


def tf_autoencoder(*args) -> str:
    """Runs `tf-autoencoder ARGS` (this checkout's), returns its output; exits on failure."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "tf_autoencoder", *args], cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"tf-autoencoder {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def model_results(category: str, model_dir: str, flags: list[str], sigma: float) -> dict:
    """Trains on the category with `train` (and `flags`), then `evaluate`s it with each map
    kind; {"seconds": training's, "l2": its evaluation.json, "ssim": ...}."""
    import json
    import time

    started = time.perf_counter()
    tf_autoencoder("train", "--data_dir", category, "--model_dir", model_dir,
                   "--embedding_images", "0", *flags)
    found = {"seconds": time.perf_counter() - started}
    for kind in ("l2", "ssim"):
        tf_autoencoder("evaluate", model_dir, "--map", kind, "--map_sigma", f"{sigma:g}")
        with open(os.path.join(model_dir, "evaluation.json")) as f:
            found[kind] = json.load(f)
    return found


def pca_results(splits, components: int, masks: np.ndarray, sigma: float) -> dict:
    """PCA with `components` fitted on the training images; per map kind, the metrics of
    its residual maps (maps.anomaly_map of the image and its PCA reconstruction), and the
    image AUROC of its reconstruction MSE. Also the reconstructions, for the picture."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    from tf_autoencoder.model.maps import anomaly_map
    from tf_autoencoder.run.localisation import localisation_metrics

    train = splits.train.images[:].astype(np.float32) / 255
    test = splits.test.images[:].astype(np.float32) / 255
    pca = PCA(n_components=components, random_state=0).fit(train.reshape(len(train), -1))
    rebuilt = pca.inverse_transform(pca.transform(test.reshape(len(test), -1)))
    rebuilt = np.clip(rebuilt, 0, 1).reshape(test.shape).astype(np.float32)
    labels = splits.test.labels
    found = {"image_auroc": float(roc_auc_score(labels > 0, np.mean((test - rebuilt) ** 2,
                                                                     axis=(1, 2, 3)))),
             "rebuilt": rebuilt}
    for kind in ("l2", "ssim"):
        maps = np.asarray(anomaly_map(test, rebuilt, kind, sigma))
        found[kind] = localisation_metrics(maps, masks, labels, splits.class_names)
        found[kind + "_maps"] = maps
    return found


def overlay_figure(path: str, name: str, splits, masks, model_dir: str, pca: dict,
                   sigma: float) -> None:
    """The first defective test image of each type: the image, its mask, the model's l2
    map and PCA's, drawn into `path` (defect_maps.maps_figure)."""
    import io

    from tf_autoencoder.files import write_bytes_atomic
    from tf_autoencoder.run.defect_maps import maps_figure, test_maps
    from tf_autoencoder.serving.loading import load_finished_model

    labels = splits.test.labels
    chosen = [int(np.flatnonzero(labels == label)[0]) for label in range(1, len(splits.class_names))
              if (labels == label).any()]
    images = splits.test.images[chosen]
    model = load_finished_model(model_dir)
    ours = test_maps(model, images, "NHWC", "l2", sigma)
    figure = maps_figure(images, masks[chosen], {"autoencoder, l2": ours,
                                                 "PCA, l2": pca["l2_maps"][chosen]},
                         [splits.class_names[labels[i]] for i in chosen],
                         f"{name}: test patches with synthetic defects, their masks, and the "
                         f"l2 anomaly maps (sigma {sigma:g}) of the autoencoder and of PCA at "
                         "its code size; cyan: the mask's outline")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())


def shown(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def section(args, argv, rows: list[dict], counts: dict) -> str:
    import shlex
    import time

    lines = [
        "## Textures: where the defect is, the autoencoder's maps against PCA's",
        "",
        f"Command: `python benchmarks/maps.py{' ' + shlex.join(argv) if argv else ''}`",
        "",
        f"Data: scikit-image's 512x512 grey textures ({', '.join(args.textures)}), cut into "
        f"{args.size}x{args.size} patches: {counts['train']:,} training patches at random "
        f"places in the top half, {counts['test']} test patches in the bottom half (which no "
        f"training patch overlaps), {counts['defective']} of them with a synthetic defect "
        f"({', '.join(DEFECTS)}, in turn) and its exact mask; written as MVTec AD "
        "categories and read by the package's data source. The model: `tf-autoencoder "
        f"train --data_dir CATEGORY {' '.join(args.flags)} --seed SEED` (the other settings "
        "chosen "
        "for the images), then `tf-autoencoder evaluate` with `--map l2` and `--map ssim`. "
        "PCA: as many components as the model's code has values, fitted on the same "
        "training patches; its residual maps made and smoothed by the same function "
        f"(sigma {args.sigma:g} pixels). Image AUROC: the reconstruction MSE of each "
        "patch (the maps do not change it). PRO: integrated to a 30% false-positive rate. "
        f"Seeds {', '.join(map(str, args.seeds))} (each draws its own patches and defects and "
        f"trains anew). {time.strftime('%Y-%m-%d')}, CPU, {os.cpu_count()} cores, "
        "shared with other work (times are rough).",
        "",
        "| texture | seed | method | code values | training (s) | image AUROC | "
        "pixel AUROC, l2 | pixel AUROC, ssim | PRO, l2 | PRO, ssim |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, pca = row["model"], row["pca"]
        lines.append(f"| {row['texture']} | {row['seed']} | autoencoder | {row['code']} | "
                     f"{ours['seconds']:.0f} | "
                     f"{shown(ours['l2']['localisation']['image_auroc'])} | "
                     + " | ".join(shown(ours[kind]["localisation"][metric])
                                  for metric in ("pixel_auroc", "pro") for kind in ("l2", "ssim"))
                     + " |")
        lines.append(f"| {row['texture']} | {row['seed']} | PCA | {row['code']} | | "
                     f"{shown(pca['image_auroc'])} | "
                     + " | ".join(shown(pca[kind][metric])
                                  for metric in ("pixel_auroc", "pro") for kind in ("l2", "ssim"))
                     + " |")
    textures = list(dict.fromkeys(row["texture"] for row in rows))
    lines += ["", "The autoencoder's pixel AUROC minus PCA's, mean over the seeds (each seed's "
                  "in brackets):", "", "| texture | l2 maps | ssim maps |", "|---|---:|---:|"]
    for name in textures:
        cells = []
        for kind in ("l2", "ssim"):
            gaps = [row["model"][kind]["localisation"]["pixel_auroc"]
                    - row["pca"][kind]["pixel_auroc"] for row in rows if row["texture"] == name]
            cells.append(f"{np.mean(gaps):+.3f} ({', '.join(f'{g:+.3f}' for g in gaps)})")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "Pixel AUROC per defect type (each type's patches with the defect-free "
                  "ones), autoencoder / PCA, mean over the seeds:", "",
              "| texture | map | " + " | ".join(DEFECTS) + " |",
              "|---|---|" + "---:|" * len(DEFECTS)]
    for name in textures:
        for kind in ("l2", "ssim"):
            cells = []
            for defect in DEFECTS:
                pairs = [(row["model"][kind]["localisation"]["per_defect"][defect]["pixel_auroc"],
                          row["pca"][kind]["per_defect"][defect]["pixel_auroc"])
                         for row in rows if row["texture"] == name]
                cells.append(" / ".join(f"{np.mean(values):.3f}" for values in zip(*pairs)))
            lines.append(f"| {name} | {kind} | {' | '.join(cells)} |")
    lines += ["", "For context, not the same images: the autoencoders of the MVTec AD paper "
                  "(Bergmann, Fauser, Sattlegger and Steger, CVPR 2019, Table 3: pixel-level "
                  "ROC AUC on its texture categories, real defects in its photographs; quoted "
                  "from Table 1 of the submission \"Few-Shot Fast-Adaptive Anomaly "
                  "Detection\", which reproduces them):", "",
              "| MVTec AD texture | AE scored by SSIM | AE scored by L2 |", "|---|---:|---:|"]
    lines += [f"| {name} | {ssim:.2f} | {l2:.2f} |" for name, (ssim, l2) in PUBLISHED.items()]
    lines += ["", f"![maps](../docs/anomaly/maps_{args.textures[0]}.png)", "",
              f"The picture (`docs/anomaly/maps_<texture>.png` for each texture): one test "
              "patch of each defect type, its mask, and the two l2 maps.", ""]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--textures", type=lambda s: s.split(","), default=list(TEXTURES))
    p.add_argument("--size", type=int, default=SIZE, help="patch side")
    p.add_argument("--train", type=int, default=2000, help="training patches per texture")
    p.add_argument("--test", type=int, default=120, help="test patches per texture (half defective)")
    p.add_argument("--flags", type=lambda s: s.split(), default="--epochs 10".split(),
                   help="train's flags beside --data_dir, --model_dir (one string)")
    p.add_argument("--sigma", type=float, default=4.0, help="the maps' smoothing, pixels")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1],
                   help="each seed draws other patches and defects, and trains anew")
    p.add_argument("--quick", action="store_true", help="smoke run: few patches, one epoch")
    p.add_argument("--out", default=os.path.join(HERE, "QUALITY.md"))
    p.add_argument("--figure_dir", default=os.path.join(REPO, "docs", "anomaly"))
    args = p.parse_args(argv)
    if args.quick:
        args.textures, args.train, args.test, args.flags = args.textures[:1], 100, 16, ["--epochs", "1"]
        args.seeds = args.seeds[:1]
    return args


def main(argv=None) -> int:
    import tempfile

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    from quality import update_report

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for number, name in enumerate(args.textures):
                rows.append(one_texture(args, work, name, seed, 100 * seed + number,
                                        figure=seed == args.seeds[0]))
    counts = {"train": args.train, "test": args.test, "defective": args.test // 2}
    body = section(args, argv, rows, counts)
    from anomaly import kept_reading

    update_report(args.out, SECTION, f"{body}\n{READING_MARK}{kept_reading(args.out, SECTION)}")
    print(body)
    print(f"Wrote {args.out}")
    return 0


def one_texture(args, work: str, name: str, seed: int, data_seed: int, figure: bool) -> dict:
    """The row of one texture and seed: the category written (patches and defects drawn
    with `data_seed`), the model trained and evaluated (with `seed`), PCA beside it, and
    with `figure`, the overlay picture."""
    from tf_autoencoder.data import sources
    from tf_autoencoder.data.mvtec import read_masks

    root = os.path.join(work, f"seed{seed}")
    write_category(root, name, args.train, args.test, args.size, seed=data_seed)
    category = os.path.join(root, name)
    model_dir = os.path.join(root, f"run-{name}")
    model = model_results(category, model_dir, [*args.flags, "--seed", str(seed)], args.sigma)
    splits = sources.load_data(data_dir=category, log=lambda *a: None)
    masks = read_masks(splits.masks, splits.image_shape)
    code = code_values(model_dir)
    pca = pca_results(splits, code, masks, args.sigma)
    if figure:
        overlay_figure(os.path.join(args.figure_dir, f"maps_{name}.png"), name, splits, masks,
                       model_dir, pca, args.sigma)
    ours = model["l2"]["localisation"]["pixel_auroc"]
    print(f"{name}, seed {seed}: pixel AUROC, l2 maps: autoencoder {ours:.3f}, PCA-{code} "
          f"{pca['l2']['pixel_auroc']:.3f}; ssim maps: autoencoder "
          f"{model['ssim']['localisation']['pixel_auroc']:.3f}, PCA "
          f"{pca['ssim']['pixel_auroc']:.3f} ({model['seconds']:.0f} s training)", flush=True)
    return {"texture": name, "seed": seed, "model": model, "pca": pca, "code": code}


def code_values(model_dir: str) -> int:
    """How many values the code of the run in `model_dir` has."""
    from tf_autoencoder.serving.loading import load_finished_model

    return int(np.prod(load_finished_model(model_dir).encoder.output_shape[1:]))


if __name__ == "__main__":
    sys.exit(main())
