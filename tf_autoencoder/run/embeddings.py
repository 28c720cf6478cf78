"""A trained autoencoder's codes and reconstructions of test images (export_embeddings.py),
and the images a variational model generates (sample). Models come as a loading.Codec,
from a finished run or a SavedModel, on NHWC float32 images in [0, 1].
"""
from __future__ import annotations

import io
import os
import sys

import numpy as np

from ..files import write_bytes_atomic, write_text_atomic
from ..images import grid_rows, image_grid, write_png
from ..model.layout import to_nhwc
from ..serving.loading import Codec
from ..data.pipeline import noisy_inputs
from .projector import write_projector
from ..data.sources import Split


def export_embedding(model: Codec, test: Split, out_dir: str, *, noise_factor=0.0,
                     seed=None, save_npy=False, save_tsv=False, log=print,
                     class_names: list[str] | None = None) -> np.ndarray:
    """Codes of `test`'s images -> projector files in out_dir (and codes.npy, codes.tsv,
    labels.tsv on request). Returns the codes, (n, D)."""
    inputs, _ = noisy_inputs(test.images, noise_factor, np.random.default_rng(seed))
    codes = model.encode(inputs)
    kind = "noisy test images" if noise_factor > 0 else "test images"
    write_projector(out_dir, codes, test.labels, test.images, description=kind,
                    class_names=class_names)
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


def export_reconstruction(model: Codec, test: Split, path: str, *,
                          noise_factor=0.0, seed=None, per_row=10, log=print) -> np.ndarray:
    """A PNG grid: for every `per_row` test images, a row of inputs, of noisy inputs (when
    noise_factor > 0) and of reconstructions. Returns the grid, uint8 (h, w, C)."""
    inputs, clean = noisy_inputs(test.images, noise_factor, np.random.default_rng(seed))
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


def generate(model, n: int, seed: int, data_format: str) -> np.ndarray:
    """n images (n, H, W, C) in [0, 1] from a variational keras model: sigmoid of its
    decoder's logits for codes drawn from N(0, I)."""
    from keras import ops

    decoder = model.decoder
    codes = np.random.default_rng(seed).standard_normal((n, *decoder.input_shape[1:]))
    logits = decoder.predict(codes.astype("float32"), verbose=0)
    return to_nhwc(ops.convert_to_numpy(ops.sigmoid(logits)), data_format)
