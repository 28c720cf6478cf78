"""The builders' options (strided, resize, sparse) and the variational model."""
import json
import math

import keras
import numpy as np
import pytest

from tf_autoencoder import Config, ConfigError, build_autoencoder
from tf_autoencoder.model.metrics import gaussian_kl
from tf_autoencoder.run.training import compile_model

OPTIONS = {
    "strided": dict(downsample="strided"),
    "resize": dict(upsample="resize"),
    "sparse": dict(code_l1=1e-3),
    "variational": dict(model="variational"),
    "variational_strided_resize": dict(model="variational", downsample="strided",
                                       upsample="resize"),
}


def build(**kwargs):
    """float32 unless asked: the default precision (auto) depends on the CPU."""
    kwargs.setdefault("image_shape", [28, 28, 1])
    kwargs.setdefault("precision", "float32")
    return build_autoencoder(Config(**kwargs).validate())


def images(shape, n=4, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("option", OPTIONS)
def test_option_trains_a_step_and_keeps_the_image_shape(option, precision):
    config = Config(image_shape=[28, 28, 1], precision=precision, **OPTIONS[option]).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    x = images((28, 28, 1), n=8)
    before = [w.copy() for w in model.get_weights()]
    logs = model.fit(x, x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model(x).shape == x.shape
    assert model.decoder(model.encoder(x)).shape == x.shape


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("shape", [(20, 18, 3), (32, 32, 1)])
def test_option_keeps_other_image_shapes(option, shape):
    model = build(image_shape=list(shape), **OPTIONS[option])
    assert model(images(shape)).shape == (4, *shape)


def test_weight_counts():
    assert build().count_params() == 7873  # the post's model
    # A conv of stride 2 per block instead of pooling: 16*16*9+16, then 8*8*9+8 twice.
    assert build(downsample="strided").count_params() == 7873 + 2320 + 584 + 584
    # Resize + 3x3 conv has as many weights as a 3x3 transposed conv.
    assert build(upsample="resize").count_params() == 7873
    # Two 1x1 heads (mean, log-variance) of 8 -> 8 channels on the code.
    assert build(model="variational").count_params() == 7873 + 2 * (8 * 8 + 8)


def test_layer_names_show_the_options():
    names = [layer.name for layer in build(downsample="strided").encoder.layers]
    assert "block0_down" in names and not any("pool" in n for n in names)
    names = [layer.name for layer in build(upsample="resize").decoder.layers]
    assert "block0_resize" in names and not any("deconv" in n for n in names)


def test_code_l1_adds_the_penalty_on_the_code_per_image():
    model = build(code_l1=0.01, weight_decay=0)
    x = images((28, 28, 1), n=5)
    model(x)
    codes = np.asarray(model.encoder(x))
    expected = 0.01 * np.abs(codes).reshape(5, -1).sum(axis=1).mean()
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), expected, rtol=1e-5)
    assert expected > 0


@pytest.mark.parametrize("option", ["strided", "resize", "variational_strided_resize"])
def test_nhwc_and_nchw_agree_for_the_options(option):
    shape = (20, 18, 3)
    nhwc = build(image_shape=list(shape), **OPTIONS[option])
    nchw = build(image_shape=list(shape), data_format="NCHW", **OPTIONS[option])
    nchw.set_weights(nhwc.get_weights())
    x = images(shape)
    out_nchw = np.asarray(nchw(x.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out_nchw, np.asarray(nhwc(x)), atol=1e-5)


@pytest.mark.parametrize("field,value", [
    ("downsample", "average"), ("upsample", "bilinear"), ("code_l1", -1.0), ("beta", -0.5),
])
def test_config_rejects_bad_option_values(field, value):
    with pytest.raises(ConfigError, match=field):
        Config(**{field: value}).validate()


def test_config_rejects_options_the_model_does_not_have():
    with pytest.raises(ConfigError, match="convolutional models"):
        Config(model="fully_connected", downsample="strided").validate()
    with pytest.raises(ConfigError, match="KL"):
        Config(model="variational", code_l1=0.1).validate()


def test_architecture_names_what_changes_the_weights():
    assert Config(downsample="strided").architecture() != Config().architecture()
    assert Config(upsample="resize").architecture() != Config().architecture()
    assert Config(model="variational").architecture() != Config().architecture()
    assert Config(code_l1=0.1).architecture() == Config().architecture()
    assert "downsample" not in Config(model="fully_connected").architecture()
    # A config.json written before these options existed still describes the same model.
    old = {k: v for k, v in Config().validate().__dict__.items()
           if k not in ("downsample", "upsample", "code_l1", "beta")}
    assert Config.from_json(json.dumps(old)).architecture() == Config().architecture()


def test_config_json_round_trip_with_options():
    config = Config(model="variational", downsample="strided", upsample="resize",
                    beta=0.5).validate()
    assert Config.from_json(config.to_json()) == config


def test_gaussian_kl_matches_the_closed_form():
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    log_var = rng.normal(size=(4, 2, 2, 3)).astype(np.float32)
    expected = np.mean(np.sum(0.5 * (np.exp(log_var) + mean**2 - 1 - log_var), axis=(1, 2, 3)))
    np.testing.assert_allclose(float(gaussian_kl(mean, log_var)), expected, rtol=1e-5)


def tiny_vae(beta):
    """A 4x4x1 VAE with a 2x2x2 code whose posterior is N(1, 1) for every input and
    whose decoder outputs logits 0 whatever the code."""
    config = Config(model="variational", image_shape=[4, 4, 1], num_filters=[2],
                    weight_decay=0, beta=beta).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    for weight in model.weights:
        value = 1.0 if weight.path == "code_mean/bias" else 0.0
        weight.assign(np.full(weight.shape, value, np.float32))
    return model


def test_vae_loss_is_reconstruction_plus_beta_times_kl_by_hand():
    # KL(N(1, 1) || N(0, 1)) = 1/2 per code value; 8 values -> 4 nats per image, over
    # 16 pixel values -> kl = 0.25.  Logits 0 give BCE log 2 whatever the image.
    model = tiny_vae(beta=2.0)
    x = images((4, 4, 1), n=6)
    result = model.evaluate(x, x, return_dict=True, verbose=0)
    np.testing.assert_allclose(result["bce"], math.log(2), rtol=1e-6)
    np.testing.assert_allclose(result["kl"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(result["loss"], math.log(2) + 2.0 * 0.25, rtol=1e-6)
    # The training step (which samples codes) reports the same loss before it updates.
    trained = model.train_on_batch(x, x, return_dict=True)
    np.testing.assert_allclose(trained["loss"], math.log(2) + 0.5, rtol=1e-6)


def test_vae_samples_when_training_and_uses_the_mean_otherwise():
    model = build(model="variational")
    x = images((28, 28, 1))
    np.testing.assert_allclose(model(x), model.decoder(model.encoder(x)), atol=1e-6)
    np.testing.assert_allclose(model(x), model(x), atol=0)
    assert not np.allclose(model(x, training=True), model(x, training=True))


def test_vae_saves_and_loads_with_encoder_and_decoder(tmp_path):
    model = build(model="variational", beta=0.5)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = images((28, 28, 1))
    assert loaded.beta == 0.5 and loaded.count_params() == model.count_params()
    np.testing.assert_allclose(loaded.encoder(x), model.encoder(x), atol=1e-6)
    codes = np.random.default_rng(1).standard_normal((2, 4, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.decoder(codes), model.decoder(codes), atol=1e-6)


def test_gaussian_kl_of_an_empty_batch_is_zero_not_nan():
    """A replica's share of a batch smaller than the replica count can be empty: its mean
    KL was NaN, which made a run report a divergence."""
    empty = np.zeros((0, 2, 2, 3), np.float32)
    assert float(gaussian_kl(empty, empty)) == 0.0


UNEVEN_MODELS = {
    "convolutional": dict(),
    "fully_connected": dict(model="fully_connected"),
    "sparse": dict(code_l1=1e-2),
    "variational": dict(model="variational", beta=0.5),
}


@pytest.mark.parametrize("name", UNEVEN_MODELS)
def test_every_metric_is_the_mean_over_the_split_with_an_uneven_last_batch(name):
    """9 images in batches of 4, 4 and 1, the last one far brighter than the rest: a metric
    that averages batch means (the VAE's kl did) counts that image as much as a batch
    of four. Each metric must be its mean over the 9 images, computed here directly."""
    from tf_autoencoder.data.pipeline import make_dataset

    config = Config(image_shape=[28, 28, 1], precision="float32",
                    **UNEVEN_MODELS[name]).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    rng = np.random.default_rng(0)
    pixels = np.concatenate([rng.integers(0, 40, (8, 28, 28, 1)),
                             rng.integers(215, 256, (1, 28, 28, 1))]).astype(np.uint8)
    reported = model.evaluate(make_dataset(pixels, batch_size=4, training=False),
                              return_dict=True, verbose=0)

    x = pixels.astype(np.float32) / 255
    logits = model.predict_on_batch(x).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    bce = np.mean(np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits))),
                  axis=(1, 2, 3))
    squared = np.mean((x - p) ** 2, axis=(1, 2, 3))
    expected = {"bce": bce.mean(), "mse": squared.mean(), "rmse": np.sqrt(squared.mean())}
    # slim's l2_regularizer, as the original: weight_decay * sum(w ** 2) / 2 on kernels.
    decay = sum(config.weight_decay / 2 * np.sum(np.square(w.numpy().astype(np.float64)))
                for w in model.trainable_weights if w.path.endswith("kernel"))
    per_image_loss = bce + decay
    if config.code_l1:
        codes = np.asarray(model.encoder(x), np.float64)
        per_image_loss = per_image_loss + config.code_l1 * np.abs(codes).reshape(9, -1).sum(1)
    if config.model == "variational":
        mean, log_var = (np.asarray(t, np.float64) for t in model.posterior(x))
        kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=(1, 2, 3)) / (28 * 28)
        expected["kl"] = kl.mean()
        per_image_loss = per_image_loss + config.beta * kl
    expected["loss"] = per_image_loss.mean()
    assert sorted(reported) == sorted(expected)
    for metric, value in expected.items():
        assert reported[metric] == pytest.approx(value, rel=1e-5), metric


def test_vae_gradient_norm_summary_is_of_the_loss_it_trains_on():
    """The summary's loss left out beta * kl: its norm was that of the reconstruction
    alone. Compared with the gradient of bce + beta * kl + weight decay taken here."""
    import tensorflow as tf

    from tf_autoencoder.run.summaries import TrainingInternals

    config = Config(model="variational", image_shape=[28, 28, 1], precision="float32",
                    beta=50.0).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    x = images((28, 28, 1), n=6)
    internals = TrainingInternals(config, (x, x), x)
    internals.set_model(model)
    reported = float(internals.gradient_norm(tf.constant(x), tf.constant(x)))

    def norm(with_kl):
        with tf.GradientTape() as tape:
            mean, log_var = model.posterior(x)
            logits = model.decoder(mean)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(x, logits))
            loss += tf.add_n([config.weight_decay / 2 * tf.reduce_sum(tf.square(w))
                              for w in model.trainable_weights if w.path.endswith("kernel")])
            if with_kl:
                kl = 0.5 * tf.reduce_sum(tf.exp(log_var) + mean**2 - 1 - log_var, [1, 2, 3])
                loss += config.beta * tf.reduce_mean(kl) / (28 * 28)
        return float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables)))

    assert reported == pytest.approx(norm(with_kl=True), rel=1e-4)
    assert reported != pytest.approx(norm(with_kl=False), rel=1e-2)
