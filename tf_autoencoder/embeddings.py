"""A trained autoencoder's codes and reconstructions of test images (export_embeddings.py).

Both sources give the same two functions on NHWC float32 images in [0, 1]:
  - a model_dir: the model its config.json describes, with its newest checkpoint's weights;
  - a SavedModel (model_dir/export/<version>/): its `encode` and `serving_default` signatures.
"""
from __future__ import annotations

import io
import os
import sys
import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from . import data as data_lib
from .config import Config
from .files import write_bytes_atomic, write_text_atomic
from .images import grid_rows, image_grid, write_png
from .model_dir import CHECKPOINT_DIR
from .models import build_autoencoder
from .projector import write_projector


class ModelError(Exception):
    """The path holds no trained model that can be loaded; the message says why."""


@dataclass
class Autoencoder:
    """encode: (n, H, W, C) -> (n, D) flattened codes; reconstruct: (n, H, W, C) -> the
    same shape, pixels in [0, 1]. Inputs NHWC float32 in [0, 1], any n."""
    encode: Callable[[np.ndarray], np.ndarray]
    reconstruct: Callable[[np.ndarray], np.ndarray]


def _batched(fn, batch_size):
    def apply(images):
        return np.concatenate([np.asarray(fn(images[i:i + batch_size]))
                               for i in range(0, len(images), batch_size)])
    return apply


def load_from_model_dir(config: Config) -> Autoencoder:
    """The model `config` describes, with the newest checkpoint in config.model_dir."""
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, CHECKPOINT_DIR))
    if latest is None:
        raise ModelError(f"{config.model_dir} holds no checkpoint in {CHECKPOINT_DIR}/: "
                         "train the model first (train.py --model_dir ...)")
    # float32 whatever precision trained, as every use of a trained model (see float32_twin).
    model = build_autoencoder(dataclasses.replace(config, precision="float32"))
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()

    def layout(images):
        return data_lib.to_layout(images, config.data_format)

    def encode(images):
        codes = model.encoder(layout(images), training=False).numpy()
        return codes.reshape(len(codes), -1)

    def reconstruct(images):
        pixels = tf.sigmoid(model(layout(images), training=False)).numpy()
        return pixels.transpose(0, 2, 3, 1) if config.channels_first else pixels

    return Autoencoder(_batched(encode, config.batch_size), _batched(reconstruct, config.batch_size))


def load_saved_model(path: str, batch_size: int = 256) -> Autoencoder:
    """A SavedModel with signatures `encode` (images -> codes) and `serving_default`
    (images -> reconstructions), both on NHWC float32 `images`."""
    loaded = tf.saved_model.load(path)
    missing = {"encode", "serving_default"} - set(loaded.signatures)
    if missing:
        raise ModelError(f"the SavedModel in {path} lacks the signature(s) "
                         f"{', '.join(sorted(missing))}: export it with this package")
    encode_signature, serve = loaded.signatures["encode"], loaded.signatures["serving_default"]

    def encode(images):
        codes = encode_signature(images=tf.constant(images, tf.float32))["codes"].numpy()
        return codes.reshape(len(codes), -1)

    def reconstruct(images):
        return serve(images=tf.constant(images, tf.float32))["reconstructions"].numpy()

    return Autoencoder(_batched(encode, batch_size), _batched(reconstruct, batch_size))


def export_embedding(model: Autoencoder, test: data_lib.Split, out_dir: str, *, noise_factor=0.0,
                     seed=None, save_npy=False, save_tsv=False, log=print) -> np.ndarray:
    """Codes of `test`'s images -> projector files in out_dir (and codes.npy, codes.tsv,
    labels.tsv on request). Returns the codes, (n, D)."""
    inputs, _ = data_lib.noisy_inputs(test.images, noise_factor, np.random.default_rng(seed))
    codes = model.encode(inputs)
    kind = "noisy test images" if noise_factor > 0 else "test images"
    write_projector(out_dir, codes, test.labels, test.images, description=kind)
    log(f"Projector: codes of {len(codes):,} {kind}, {codes.shape[1]} values each, in {out_dir} "
        f"(tensorboard --logdir {out_dir})")
    if save_npy:
        path = os.path.join(out_dir, "codes.npy")
        buffer = io.BytesIO()
        np.save(buffer, codes)
        write_bytes_atomic(path, buffer.getvalue())
        log(f"Codes: {path} (float32 {codes.shape[0]} x {codes.shape[1]}; labels in metadata.tsv)")
    if save_tsv:
        lines = ["\t".join(f"{v:.6g}" for v in row) for row in codes]
        write_text_atomic(os.path.join(out_dir, "codes.tsv"), "\n".join(lines) + "\n")
        write_bytes_atomic(os.path.join(out_dir, "labels.tsv"),
                           "".join(f"{int(label)}\n" for label in test.labels).encode())
        log(f"Codes: {os.path.join(out_dir, 'codes.tsv')} and labels.tsv, one image a row "
            "(the projector's standalone format)")
    return codes


def export_reconstruction(model: Autoencoder, test: data_lib.Split, path: str, *,
                          noise_factor=0.0, seed=None, per_row=10, log=print) -> np.ndarray:
    """A PNG grid: for every `per_row` test images, a row of inputs, of noisy inputs (when
    noise_factor > 0) and of reconstructions. Returns the grid, uint8 (h, w, C)."""
    inputs, clean = data_lib.noisy_inputs(test.images, noise_factor, np.random.default_rng(seed))
    reconstructions = model.reconstruct(inputs)
    groups = [clean] + ([inputs] if inputs is not clean else []) + [reconstructions]
    # Row i of every group, then row i + 1 of every group, ...
    grid = image_grid([row for rows in zip(*(grid_rows(g, per_row) for g in groups))
                       for row in rows])
    write_png(path, grid)
    log(f"Reconstructions of {len(clean):,} test images: {path}")
    return grid


def display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show(grid: np.ndarray, title: str) -> None:
    """Opens a window with the grid; needs matplotlib and a display."""
    import matplotlib.pyplot as plt

    figure = plt.figure(title)
    plt.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray")
    plt.axis("off")
    figure.tight_layout()
    plt.show()
