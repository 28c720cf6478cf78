"""The linear path (--linear_path pca): before its first update the model reconstructs
its training images as PCA with as many components as its code has values does, PCA
computed here by an SVD of our own; the same in both layouts; a run starts it there and
a resumed run keeps its trained weights."""
import dataclasses

import keras
import numpy as np
import pytest
import skimage.data

from tf_autoencoder.config import Config, ConfigError
from tf_autoencoder.model.linear_path import start_at_pca
from tf_autoencoder.model.models import build_autoencoder, copy_weights
from tf_autoencoder.run.training import compile_model

CODE = 6


@pytest.fixture(scope="module")
def patches():
    """300 patches of 8x8 RGB from a real photograph, uint8."""
    image = skimage.data.astronaut()[::4, ::4]
    cut = np.array([image[top:top + 8, left:left + 8]
                    for top in range(0, 120, 6) for left in range(0, 120, 8)])
    return cut[:300]


def svd_pca_reconstructions(pixels, components):
    """PCA's reconstructions of `pixels` (n, d) from the top `components` right singular
    vectors of the centred pixels, clipped to [0, 1] as sigmoid(logits) is."""
    mean = pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels - mean, full_matrices=False)
    basis = vt[:components]
    return np.clip((pixels - mean) @ basis.T @ basis + mean, 0, 1)


def config(**changes):
    settings = dict(num_filters=[4, 4], downsample="strided", code_size=CODE, linear_path="pca",
                    loss="mse", image_shape=[8, 8, 3], precision="float32")
    return Config(**{**settings, **changes}).validate()


def reconstructions(model, images, data_format="channels_last"):
    x = images.astype(np.float32) / 255
    if data_format == "channels_first":
        x = x.transpose(0, 3, 1, 2)
    out = 1 / (1 + np.exp(-model.predict_on_batch(x)))
    return out.transpose(0, 2, 3, 1) if data_format == "channels_first" else out


def test_the_model_starts_at_pcas_reconstruction_error_of_its_training_images(patches):
    """Catches a transposed basis, a missing mean, a convolution left at its random
    start (it adds to the code and the image) or a basis of the wrong size: each moves
    the error away from PCA's, and PCA with one component fewer is clearly worse."""
    model = build_autoencoder(config())
    start_at_pca(model, patches, seed=0)
    pixels = patches.reshape(len(patches), -1).astype(np.float64) / 255
    mse = np.mean(np.square(reconstructions(model, patches).reshape(len(patches), -1) - pixels))
    pca = np.mean(np.square(svd_pca_reconstructions(pixels, CODE) - pixels))
    fewer = np.mean(np.square(svd_pca_reconstructions(pixels, CODE - 1) - pixels))
    assert mse == pytest.approx(pca, rel=1e-3)
    assert fewer > pca * 1.02
    # The code is PCA's code: its values' variances are the top eigenvalues, largest first.
    codes = model.encoder.predict_on_batch(patches.astype(np.float32) / 255)
    variances = np.var(codes, axis=0)
    assert np.all(np.diff(variances) < 0)


def test_mixed_bfloat16_trains_the_linear_path_on_saturated_pixels(patches):
    """In bfloat16, 1 - 1e-4 rounds to 1, so pixel log-odds computed in it are infinite
    for white pixels and the first update turns the weights to NaN: the loss of the next
    step was NaN on photographs. Catches the linear path's log-odds computed in the
    compute dtype instead of float32."""
    saturated = patches.copy()
    saturated[:, :2] = 255  # white rows (and black ones) in every patch, as photos have
    saturated[:, -2:] = 0
    settings = config(precision="mixed_bfloat16")
    model = build_autoencoder(settings)
    compile_model(model, settings)
    start_at_pca(model, saturated, seed=0)
    x = saturated.astype(np.float32) / 255
    losses = [float(model.train_on_batch(x[:64], x[:64])[0]) for _ in range(3)]
    assert np.all(np.isfinite(losses)), losses
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_the_convolutions_learn_beside_a_frozen_linear_path(patches):
    """With the linear path frozen at PCA, whatever lowers the training error below PCA's
    is the convolutions' doing. Both of their layers next to the code start at zero, so
    every other conv layer gets no gradient at first: a start that blocks the gradient
    for good (a zeroed ReLU layer, the code's layer zeroed on the wrong side, weights that
    die) leaves the error at PCA's. The bound: a tenth of what the last principal
    component adds (PCA with one component fewer)."""
    keras.utils.set_random_seed(0)
    settings = config(learning_rate=1e-2)
    model = build_autoencoder(settings)
    start_at_pca(model, patches, seed=0)
    for part in (model.encoder, model.decoder):
        for layer in part.layers:
            if layer.name in ("linear_encode", "linear_decode"):
                layer.trainable = False
    compile_model(model, settings)
    x = patches.astype(np.float32) / 255
    model.fit(x, x, batch_size=32, epochs=8, shuffle=True, verbose=0)
    pixels = patches.reshape(len(patches), -1).astype(np.float64) / 255
    mse = np.mean(np.square(reconstructions(model, patches).reshape(len(patches), -1) - pixels))
    pca = np.mean(np.square(svd_pca_reconstructions(pixels, CODE) - pixels))
    fewer = np.mean(np.square(svd_pca_reconstructions(pixels, CODE - 1) - pixels))
    assert mse < pca - 0.1 * (fewer - pca)


def test_nchw_starts_where_nhwc_does(patches):
    """The same weights give the same images in both layouts: the linear path flattens
    in NHWC order whatever the layout."""
    nhwc = build_autoencoder(config())
    start_at_pca(nhwc, patches, seed=0)
    nchw = build_autoencoder(config(data_format="NCHW"))
    copy_weights(nhwc, nchw)
    np.testing.assert_allclose(reconstructions(nchw, patches, "channels_first"),
                               reconstructions(nhwc, patches), atol=1e-5)


@pytest.mark.parametrize("changes", [dict(code_size=None), dict(model="variational")])
def test_the_linear_path_needs_a_flat_code_of_the_convolutional_model(changes):
    with pytest.raises(ConfigError, match="linear_path pca needs"):
        dataclasses.replace(config(), **changes).validate()
