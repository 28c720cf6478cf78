import keras
import numpy as np
import pytest

from tf_autoencoder import Config, ConfigError, build_autoencoder, conv_decoder, conv_encoder


def build(**kwargs):
    kwargs.setdefault("image_shape", [28, 28, 1])
    return build_autoencoder(Config(**kwargs).validate())


def test_convolutional_model_has_the_posts_7873_weights_and_4x4x8_code():
    model = build()
    assert model.count_params() == 7873
    assert model.encoder.output_shape == (None, 4, 4, 8)
    assert model.decoder.output_shape == (None, 28, 28, 1)


def test_fully_connected_model_has_222384_weights():
    model = build(model="fully_connected")
    assert model.count_params() == 222_384
    assert model.encoder.output_shape == (None, 32)
    assert model.decoder.output_shape == (None, 28, 28, 1)


def test_encoder_pads_odd_sizes_28_14_7_4():
    model = build()
    pooled = [layer.output.shape[1] for layer in model.encoder.layers if "pool" in layer.name]
    assert pooled == [14, 7, 4]
    assert [layer.name for layer in model.encoder.layers if "pad" in layer.name] == ["block2_pad"]


@pytest.mark.parametrize("shape", [(32, 32, 3), (20, 20, 1), (64, 64, 1), (28, 36, 2)])
@pytest.mark.parametrize("model_name", ["convolutional", "fully_connected"])
def test_output_shape_equals_input_shape(shape, model_name):
    model = build(model=model_name, image_shape=list(shape), hidden_units=[16, 8])
    images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    assert model(images).shape == (2, *shape)


def test_encoder_and_decoder_work_on_their_own():
    model = build()
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    codes = model.encoder(images)
    np.testing.assert_allclose(model.decoder(codes), model(images), atol=1e-6)


@pytest.mark.parametrize("filters", [[], [16, 0, 8], [16, -8], [3.5]])
def test_builder_rejects_bad_filter_lists(filters):
    with pytest.raises(ValueError, match="num_filters"):
        conv_encoder(keras.Input((28, 28, 1)), filters)
    with pytest.raises(ValueError, match="num_filters"):
        conv_decoder(keras.Input((4, 4, 8)), filters, (28, 28, 1))


def test_builder_rejects_input_too_small_for_the_blocks():
    with pytest.raises(ValueError, match="too small for 3 pooling blocks"):
        conv_encoder(keras.Input((4, 4, 1)), [16, 8, 8])


@pytest.mark.parametrize("field,value", [
    ("num_filters", []), ("num_filters", [16, 0]), ("hidden_units", [-1]),
    ("dropout", 0.0), ("dropout", 1.5), ("learning_rate", 0), ("epochs", 0),
    ("batch_size", 0), ("noise_factor", -0.1), ("model", "resnet"), ("data_format", "NWHC"),
    ("loss", "l1"),
])
def test_config_rejects_nonsense(field, value):
    with pytest.raises(ConfigError):
        Config(**{field: value}).validate()


def test_config_json_round_trip():
    config = Config(num_filters=[8, 4], data_format="NCHW", seed=3).validate()
    assert Config.from_json(config.to_json()) == config
    assert config.data_format == "channels_first"


@pytest.mark.parametrize("model_name,shape", [
    ("convolutional", (28, 28, 1)), ("convolutional", (20, 20, 3)),
    ("fully_connected", (28, 28, 1)), ("fully_connected", (12, 10, 3)),
])
def test_nhwc_and_nchw_give_the_same_outputs_with_the_same_weights(model_name, shape):
    nhwc = build(model=model_name, image_shape=list(shape), data_format="NHWC")
    nchw = build(model=model_name, image_shape=list(shape), data_format="NCHW")
    # Non-zero biases: fresh layers have zero ones, which would hide a bias on the wrong axis.
    rng = np.random.default_rng(0)
    weights = [w + 0.1 * rng.standard_normal(w.shape).astype(np.float32) for w in nhwc.get_weights()]
    nhwc.set_weights(weights)
    nchw.set_weights(weights)
    images = np.random.default_rng(1).random((4, *shape), dtype=np.float32)
    out_nhwc = np.asarray(nhwc(images))
    out_nchw = np.asarray(nchw(images.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out_nchw, out_nhwc, atol=1e-5)
    # Compiled graphs too (graph mode fuses ops differently from eager).
    graph_nchw = nchw.predict_on_batch(images.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(graph_nchw, nhwc.predict_on_batch(images), atol=1e-5)


def test_saved_keras_model_keeps_encoder_and_decoder(tmp_path):
    model = build()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = np.random.default_rng(2).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.encoder(images), model.encoder(images), atol=1e-6)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
