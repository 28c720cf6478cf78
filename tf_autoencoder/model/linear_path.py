"""Where the linear path (config.linear_path "pca", model/models.py) starts: at PCA.

PCA with k components is the best linear autoencoder with a k-value code. The model's
linear path (one dense layer image -> code, one code -> image) is set to it, fitted on
the training images, and the convolutions' last layers on either side of the code to
zero: before its first update the model reconstructs as PCA does, and training moves it
from there. Its weights live in the model, so a saved or exported model needs nothing
more; a run fits them again only when it starts afresh (a resumed run restores them).
"""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

# PCA is fitted on at most this many training images, drawn with the run's seed: enough
# for the leading components of 64x64 colour images, in seconds on two cores.
MAX_IMAGES = 20_000
ENCODER_LAYER, DECODER_LAYER = "linear_encode", "linear_decode"
CONV_CODE_LAYER = "code"  # flat_code's, the convolutional encoder's last


def principal_components(images, components: int, seed: int):
    """(mean (d,), components (k, d), images used) of `images` (uint8 (N, H, W, C),
    pixels / 255 flattened in NHWC order); rows beyond the rank the images allow are
    zero."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), min(len(images), MAX_IMAGES), replace=False))
    pixels = np.asarray(images[chosen]).reshape(len(chosen), -1).astype(np.float32) / 255
    fitted = PCA(n_components=min(components, *pixels.shape), random_state=seed).fit(pixels)
    basis = np.zeros((components, pixels.shape[1]), np.float32)
    basis[:len(fitted.components_)] = fitted.components_
    return fitted.mean_.astype(np.float32), basis, len(chosen)


def start_at_pca(model, images, seed: int) -> str:
    """Sets `model`'s linear path to PCA of `images` (the training split) and the
    convolutions' share of the code and of the image to zero; returns a line saying so."""
    encode = model.encoder.get_layer(ENCODER_LAYER)
    decode = model.decoder.get_layer(DECODER_LAYER)
    mean, basis, used = principal_components(images, encode.units, seed)
    encode.kernel.assign(basis.T)
    encode.bias.assign(-basis @ mean)
    decode.kernel.assign(basis)
    decode.bias.assign(mean)
    conv_code = model.encoder.get_layer(CONV_CODE_LAYER)
    conv_image = next(layer for layer in reversed(model.decoder.layers)
                      if hasattr(layer, "kernel") and not layer.name.startswith(DECODER_LAYER))
    for layer in (conv_code, conv_image):
        layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
    return (f"The linear path starts at PCA with {encode.units} components of {used:,} "
            "training images; the convolutions start at zero")
