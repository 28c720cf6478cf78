import keras
import numpy as np
import pytest

from tf_autoencoder import Config, ConfigError, build_autoencoder, conv_decoder, conv_encoder
from tf_autoencoder.model import precision
from tf_autoencoder.model import layers as layers_module


def build(**kwargs):
    """The model for these settings; float32 unless asked, so comparisons can be tight on
    any CPU (the default precision, auto, depends on the CPU)."""
    kwargs.setdefault("image_shape", [28, 28, 1])
    kwargs.setdefault("precision", "float32")
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
    ("loss", "l1"), ("precision", "float16"),
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


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    """AMX or AVX-512 bfloat16 picks bfloat16 (each measured faster than float32,
    benchmarks/RESULTS.md); AVX-512 without its bfloat16 instructions does not. Catches a
    rule that takes any AVX-512 for bfloat16, or misses one of the two."""
    cases = {"amx": "fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile",
             "avx512_bf16": "fpu avx512f avx512_bf16",
             "avx512": "fpu sse2 avx2 avx512f avx512_vnni",
             "amx_alone": "fpu amx_bf16 amx_tile"}
    for name, flags in cases.items():
        (tmp_path / name).write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision.cpu_has_bfloat16(str(tmp_path / "amx"))
    assert precision.cpu_has_bfloat16(str(tmp_path / "avx512_bf16"))
    assert precision.cpu_has_bfloat16(str(tmp_path / "amx_alone"))
    assert not precision.cpu_has_bfloat16(str(tmp_path / "avx512"))
    assert not precision.cpu_has_bfloat16(str(tmp_path / "missing"))


@pytest.mark.parametrize("native,gpus,on_cpu,expected", [
    (True, [], None, "mixed_bfloat16"),
    (False, [], None, "float32"),
    # A GPU computes the model: the CPU's flags do not decide (GPU servers often have AMX).
    (True, ["GPU:0"], None, "float32"),
    (True, ["GPU:0"], True, "mixed_bfloat16"),  # --cpu_replicas: the CPU computes after all
])
def test_auto_precision_resolves_by_the_device_that_computes(monkeypatch, native, gpus, on_cpu,
                                                             expected):
    """Catches: auto decided by the CPU's flags while a GPU trains."""
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: native)
    monkeypatch.setattr(precision, "gpus", lambda: gpus)
    assert precision.resolve_precision("auto", on_cpu=on_cpu) == expected
    for explicit in ("float32", "mixed_bfloat16"):
        assert precision.resolve_precision(explicit, on_cpu=on_cpu) == explicit
    assert Config().validate().precision == "auto"  # resolved once the devices are known


@pytest.mark.parametrize("model_name", ["convolutional", "fully_connected", "variational"])
def test_mixed_bfloat16_computes_in_bfloat16_with_float32_weights_and_outputs(model_name):
    float32 = build(model=model_name, hidden_units=[64, 32])
    mixed = build(model=model_name, hidden_units=[64, 32], precision="mixed_bfloat16")
    assert mixed.count_params() == float32.count_params()
    assert {w.dtype for w in mixed.weights} == {"float32"}
    assert any(layer.compute_dtype == "bfloat16" for layer in mixed.encoder.layers)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    rng = np.random.default_rng(0)
    mixed.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
                       for w in float32.get_weights()])
    float32.set_weights(mixed.get_weights())
    images = rng.random((4, 28, 28, 1), dtype=np.float32)
    codes, logits = mixed.encoder(images), mixed(images)
    assert codes.dtype == "float32" and logits.dtype == "float32"
    expected = np.asarray(float32(images))
    # bfloat16 keeps 8 significant bits: close to float32, but not equal to it.
    assert not np.array_equal(np.asarray(logits), expected)
    np.testing.assert_allclose(logits, expected, atol=0.05 * np.abs(expected).max())
    np.testing.assert_allclose(codes, float32.encoder(images),
                               atol=0.05 * np.abs(np.asarray(float32.encoder(images))).max())


@pytest.mark.parametrize("size,in_channels,out_channels", [((4, 4), 8, 8), ((7, 5), 3, 2)])
def test_sub_pixel_conv_transpose_equals_the_stride_2_transposed_conv(size, in_channels,
                                                                       out_channels):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, *size, in_channels)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, out_channels, in_channels)).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    transposed = keras.ops.conv_transpose(images, kernel, strides=2, padding="same")
    expected = np.maximum(np.asarray(transposed) + bias, 0)
    assert expected.shape == (2, 2 * size[0], 2 * size[1], out_channels)
    got = layers_module.sub_pixel_conv_transpose(images, kernel, bias, keras.activations.relu)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(layers_module.sub_pixel_conv_transpose(images, kernel),
                               transposed, atol=1e-5)


@pytest.mark.parametrize("dtype,data_format,strides,activation,sub_pixel", [
    ("mixed_bfloat16", "channels_last", 2, "relu", True),
    ("mixed_bfloat16", "channels_last", 2, None, True),
    ("float32", "channels_last", 2, "relu", False),  # no faster in float32: the plain op stays
    ("mixed_bfloat16", "channels_first", 2, "relu", False),
    ("mixed_bfloat16", "channels_last", 1, "relu", False),
    ("mixed_bfloat16", "channels_last", 2, "softmax", False),  # not elementwise
])
def test_transposed_conv_layer_takes_the_sub_pixel_path_only_where_it_is_faster(
        dtype, data_format, strides, activation, sub_pixel):
    import tensorflow as tf

    settings = dict(strides=strides, padding="same", activation=activation,
                    data_format=data_format)
    layer = layers_module.Conv2DTranspose(4, 3, dtype=dtype, **settings)
    reference = layers_module.Conv2DTranspose(4, 3, **settings)
    shape = (2, 3, 6, 5) if data_format == "channels_first" else (2, 6, 5, 3)
    images = np.random.default_rng(1).random(shape, dtype=np.float32)
    layer.build(shape)
    reference.build(shape)
    rng = np.random.default_rng(2)
    layer.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    reference.set_weights(layer.get_weights())
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert ("DepthToSpace" in op_types) == sub_pixel
    assert ("Conv2DBackpropInput" in op_types) == (not sub_pixel)
    expected = np.asarray(reference(images))
    np.testing.assert_allclose(np.asarray(layer(images), dtype=np.float32), expected,
                               atol=0.02 * np.abs(expected).max())
