"""The tutorial models (README "Models from other tutorials"), the builders' options behind
them (convs per block, kernel size, 2x2 transposed upsampling, no output layer, a flat
code), and the picture of a two-value code space."""
import json
import math
import os
import re
import shlex

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, error_lines, run_python, run_train
from tf_autoencoder import Config, ConfigError, build_autoencoder
from tf_autoencoder.cli import command_parser
from tf_autoencoder.commands import config_from_args

# Weight counts of the tutorials' models, computed with PyTorch's own modules from
# the layers the tutorials list (the issue that asked for them gives the figures).
TUTORIAL_WEIGHTS = {47_245, 1_077, 50_992, 222_384}


def readme_rows():
    """(name, train.py arguments, weights, code shape) of each row of the README's table."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    table = text.split("## Models from other tutorials", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `python train\.py ([^`]*)` \| ([\d,]+) \| ([\dx]+) \|$",
                      table, re.M)
    return [(name, shlex.split(args), int(weights.replace(",", "")),
             tuple(int(n) for n in code.split("x"))) for name, args, weights, code in rows]


def config_of(args, **changes) -> Config:
    parsed = command_parser("train", "train.py").parse_args(args)
    config = config_from_args(parsed)
    for name, value in dict(image_shape=[28, 28, 1], precision="float32", **changes).items():
        setattr(config, name, value)
    return config.validate()


def test_the_readme_lists_each_tutorial_model_once():
    rows = readme_rows()
    assert {weights for _, _, weights, _ in rows} == TUTORIAL_WEIGHTS
    assert len(rows) == len(TUTORIAL_WEIGHTS)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("row", readme_rows(), ids=lambda row: row[0])
def test_a_readme_row_builds_its_weight_count_and_code_shape(row, data_format):
    name, args, weights, code_shape = row
    model = build_autoencoder(config_of(args + ["--data_format", data_format]))
    assert model.count_params() == weights
    nhwc = tuple(model.encoder.output_shape[1:])
    if data_format == "NCHW" and len(nhwc) == 3:
        nhwc = (*nhwc[1:], nhwc[0])
    assert nhwc == code_shape
    assert tuple(model.decoder.output_shape[1:]) == tuple(model.encoder.input_shape[1:])


def kernels(part):
    return [tuple(w.shape) for w in part.weights if w.path.endswith("kernel")]


def test_the_strided_tutorial_has_the_tutorials_layers():
    """The same count could come from other layers: the kernels are the tutorial's, in order
    (Keras keeps a conv's kernel as (h, w, in, out), a transposed conv's as (h, w, out, in))."""
    (_, args, _, _), = [row for row in readme_rows() if row[2] == 47_245]
    model = build_autoencoder(config_of(args))
    assert kernels(model.encoder) == [(3, 3, 1, 16), (3, 3, 16, 32), (7, 7, 32, 12)]
    assert kernels(model.decoder) == [(7, 7, 32, 12), (3, 3, 16, 32), (3, 3, 1, 16)]
    strides = [layer.strides for layer in model.decoder.layers if hasattr(layer, "strides")]
    assert strides == [(1, 1), (2, 2), (2, 2)]
    activations = [layer.activation.__name__ for layer in model.decoder.layers
                   if hasattr(layer, "kernel")]
    assert activations == ["relu", "relu", "linear"]  # logits: sigmoid comes after


def test_the_pooled_tutorial_has_the_tutorials_layers():
    (_, args, _, _), = [row for row in readme_rows() if row[2] == 1_077]
    model = build_autoencoder(config_of(args))
    assert kernels(model.encoder) == [(3, 3, 1, 16), (3, 3, 16, 4)]
    assert kernels(model.decoder) == [(2, 2, 16, 4), (2, 2, 1, 16)]
    pools = [layer for layer in model.encoder.layers
             if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 2


def test_the_defaults_are_still_the_posts_model():
    assert build_autoencoder(config_of([])).count_params() == 7_873
    assert build_autoencoder(config_of(["--model", "fully_connected"])).count_params() == 222_384


def test_a_flat_code_adds_a_bottleneck_and_its_mirror():
    """code_size k on the post's 4x4x8 map: a 4x4 conv to k values and a 4x4 transposed conv
    back to 8 channels, each with its bias."""
    for k in (1, 2, 12):
        model = build_autoencoder(config_of(["--code_size", str(k)]))
        assert model.count_params() == 7_873 + (4 * 4 * 8 * k + k) + (4 * 4 * 8 * k + 8)
        assert model.encoder.output_shape == (None, k)
    fc = build_autoencoder(config_of(["--model", "fully_connected", "--code_size", "2"]))
    assert fc.count_params() == 222_384 + (32 * 2 + 2) + (2 * 32 + 32)
    vae = build_autoencoder(config_of(["--model", "variational", "--code_size", "2"]))
    assert vae.encoder.output_shape == (None, 2)
    assert [tuple(o.shape) for o in vae.posterior.outputs] == [(None, 2), (None, 2)]


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_the_new_options_compute_the_same_function_in_both_layouts(layout):
    """Weights copied from an NHWC model give the same reconstructions in NCHW (catches a
    flat code flattened in the layout's order, or a kernel-sized bottleneck on the wrong axes)."""
    args = ["--num_filters", "4,6", "--convs_per_block", "1", "--kernel_size", "5",
            "--upsample", "transpose_2x2", "--no_output_layer", "--code_size", "3"]
    nhwc = build_autoencoder(config_of(args))
    other = build_autoencoder(config_of(args, data_format=layout))
    other.set_weights(nhwc.get_weights())
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(nhwc(x))
    moved = x.transpose(0, 3, 1, 2) if layout == "channels_first" else x
    got = keras.ops.convert_to_numpy(other(moved))
    got = got.transpose(0, 2, 3, 1) if layout == "channels_first" else got
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(4, 33), channels=st.integers(1, 3),
       num_filters=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       convs_per_block=st.integers(0, 3), kernel_size=st.integers(1, 6),
       downsample=st.sampled_from(["pool", "strided"]),
       upsample=st.sampled_from(["transpose", "transpose_2x2", "resize"]),
       output_layer=st.booleans(), code_size=st.one_of(st.none(), st.integers(1, 5)),
       model=st.sampled_from(["convolutional", "variational"]),
       data_format=st.sampled_from(["channels_last", "channels_first"]))
def test_any_valid_setting_builds_an_autoencoder_of_the_image_shape(
        size, channels, num_filters, convs_per_block, kernel_size, downsample, upsample,
        output_layer, code_size, model, data_format):
    """Either a model whose output has the images' shape and whose code has code_size values,
    or a ConfigError that names the bad setting."""
    config = Config(model=model, num_filters=num_filters, convs_per_block=convs_per_block,
                    kernel_size=kernel_size, downsample=downsample, upsample=upsample,
                    output_layer=output_layer, code_size=code_size, data_format=data_format,
                    image_shape=[size, size + 1, channels], precision="float32")
    blocks_fit = all(math.ceil(size / 2 ** b) >= 2 for b in range(len(num_filters)))
    expected_error = (
        "convs_per_block 0" if convs_per_block == 0 and downsample == "pool"
        else None if blocks_fit and kernel_size <= size
        else "too small" if not blocks_fit else "kernel_size")
    if expected_error:
        with pytest.raises(ConfigError, match=expected_error):
            config.validate().check_data(num_train=256)
        return
    config.validate().check_data(num_train=256)
    autoencoder = build_autoencoder(config)
    shape = tuple(autoencoder.encoder.input_shape[1:])
    assert tuple(autoencoder.decoder.output_shape[1:]) == shape
    if code_size:
        assert autoencoder.encoder.output_shape == (None, code_size)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    assert np.isfinite(keras.ops.convert_to_numpy(autoencoder(x))).all()


@pytest.mark.parametrize("args, message", [
    (["--code_size", "0"], "code_size must be >= 1"),
    (["--kernel_size", "29"], "kernel_size 29 is larger than the 28x28 images"),
    (["--kernel_size", "0"], "kernel_size must be >= 1"),
    (["--convs_per_block", "0"], "convs_per_block 0 with downsample pool"),
    (["--convs_per_block", "-1", "--downsample", "strided"], "convs_per_block must be >= 0"),
    (["--model", "fully_connected", "--kernel_size", "5"],
     "kernel_size applies to convolutional models"),
    (["--model", "fully_connected", "--no_output_layer", "--upsample", "resize"],
     "upsample, output_layer apply to convolutional models"),
])
def test_a_bad_setting_is_one_line_and_exit_2_before_anything_is_written(tmp_path, args,
                                                                          message):
    model_dir = tmp_path / "run"
    result = run_train("--dataset", "mnist_sample", "--model_dir", str(model_dir), *args,
                       cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not model_dir.exists()


def test_a_readme_row_trains_exports_and_evaluates_with_the_weight_count_it_prints(tmp_path):
    """The strided tutorial (a flat code, no output layer) through the command line, in NCHW:
    the printed weight table's total is the README's, the export's encode gives the Keras
    model's codes, and evaluate scores it."""
    (_, args, weights, code_shape), = [row for row in readme_rows() if row[2] == 47_245]
    model_dir = tmp_path / "run"
    result = run_train(*args, "--dataset", "mnist_sample", "--epochs", "1", "--data_format",
                       "NCHW", "--embedding_images", "50", "--model_dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    total = re.search(r"^total\s+([\d,]+)$", result.stdout, re.M).group(1)
    assert int(total.replace(",", "")) == weights
    evaluated = run_python("-m", "tf_autoencoder", "evaluate", str(model_dir),
                           "--probe_samples", "500")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert all(np.isfinite(v) for v in report["metrics"].values())
    assert "latent_2d" not in report  # a 12-value code is not drawn
    import tensorflow as tf

    from tf_autoencoder.serving.loading import load_finished_model

    loaded = tf.saved_model.load(str(model_dir / "export" / "1"))
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    codes = loaded.signatures["encode"](images=tf.constant(x))["codes"].numpy()
    model = load_finished_model(str(model_dir))
    expected = keras.ops.convert_to_numpy(model.encoder(x.transpose(0, 3, 1, 2)))
    assert codes.shape == (3, *code_shape)
    np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("args, weights", [
    # Drops block0_conv1 (16*16*9+16), block1_conv1 and block2_conv1 (8*8*9+8 each).
    (["--convs_per_block", "1"], 7_873 - 2_320 - 584 - 584),
    # Every 3x3 kernel becomes 5x5: 25/9 of each kernel, biases unchanged.
    (["--kernel_size", "5"], (16 * 25 + 16) + (16 * 16 * 25 + 16) + (16 * 8 * 25 + 8)
     + 3 * (8 * 8 * 25 + 8) + 2 * (8 * 8 * 25 + 8) + (8 * 16 * 25 + 16) + (16 * 25 + 1)),
    # Decoder deconvs 3x3 -> 2x2: 8*8*4+8 twice and 8*16*4+16 instead of 584, 584, 1,168.
    (["--upsample", "transpose_2x2"], 7_873 - 2 * (584 - 264) - (1_168 - 528)),
    # Blocks 8->8, 8->16, 16->1 (linear), no separate output conv: one 8->8 deconv fewer.
    (["--no_output_layer"], 7_873 - 584),
])
def test_the_docs_weight_counts_of_each_option(args, weights):
    """The figures in docs/variants-and-evaluation.md, derived layer by layer."""
    assert build_autoencoder(config_of(args)).count_params() == weights
    with open(os.path.join(REPO, "docs", "variants-and-evaluation.md")) as f:
        assert f"{weights:,}" in f.read()
