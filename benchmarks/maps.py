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
    python benchmarks/maps.py           # about 15 minutes on 2 CPU cores
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
SIZE = 64  # patch side, pixels


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
