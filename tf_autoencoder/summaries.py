"""What a run shows while it trains: reconstruction pictures."""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from .images import image_grid, write_png


class SaveReconstructions(keras.callbacks.Callback):
    """After each epoch, writes a grid of the same test images: inputs, noisy inputs
    (when denoising) and reconstructions, as `out_dir/step_XXXXX.png` (the original's
    SaveReconstructionListener).

    inputs: (n, H, W, C) or (n, C, H, W) float32 clean images in the model's layout.
    """

    def __init__(self, out_dir: str, inputs: np.ndarray, *, noise_factor: float = 0.0,
                 channels_first: bool = False, seed: int = 0):
        super().__init__()
        self.out_dir = out_dir
        self.clean = inputs
        self.channels_first = channels_first
        rng = np.random.default_rng(seed)  # fixed noise, so pictures compare across epochs
        self.noisy = (np.clip(inputs + noise_factor * rng.standard_normal(inputs.shape), 0, 1)
                      .astype(np.float32) if noise_factor > 0 else None)

    def _nhwc(self, images):
        return images.transpose(0, 2, 3, 1) if self.channels_first else images

    def on_epoch_end(self, epoch, logs=None):
        model_input = self.noisy if self.noisy is not None else self.clean
        reconstructions = tf.sigmoid(self.model(model_input, training=False)).numpy()
        rows = [self.clean] + ([self.noisy] if self.noisy is not None else []) + [reconstructions]
        step = int(self.model.optimizer.iterations.numpy())
        write_png(os.path.join(self.out_dir, f"step_{step:05d}.png"),
                  image_grid([self._nhwc(r) for r in rows]))
