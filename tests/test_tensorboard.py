"""TensorBoard logs of a short training run, read back from the event files, from the
projector's files and from a real `tensorboard` server; and export_embeddings.py on the run."""
import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import REPO, run_record
from tf_autoencoder.images import sprite_image
from tf_autoencoder.run.projector import TENSOR_NAME, write_projector
from tf_autoencoder.data.sources import load_mnist_sample

EMBEDDING_IMAGES = 200
CODE_SIZE = 4 * 4 * 8
STEPS_PER_EPOCH = 4000 // 256  # the sample's 4,000 training images, batches of 256
HIDDEN_LAYERS = [f"encoder/block{b}_conv{i}" for b in range(3) for i in range(2)] + [
    f"decoder/block{b}_deconv" for b in range(3)]
WEIGHT_LAYERS = [f"encoder/block{b}_conv{i}" for b in range(3) for i in range(2)] + [
    f"decoder/block{b}_deconv" for b in range(3)] + ["decoder/linear"]


def export_embeddings(*args):
    """export_embeddings.py, in this process: it reloads the run's model and data, which
    this process has imported already. (The script itself runs in
    test_export_embeddings_bad_input_is_one_line.)"""
    from tf_autoencoder.cli import main

    return main(list(args), command="embeddings", prog="export_embeddings.py")


def run_script(script, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def run(denoising_run):
    """Two epochs of a denoising model on the MNIST sample, with PNGs and a projector of
    EMBEDDING_IMAGES codes (conftest's shared run; read only)."""
    return denoising_run[0]


def load_model(run):
    """The run's model.keras."""
    from tf_autoencoder.serving.loading import load_finished_model

    return load_finished_model(run)


def grid_rows(grid, columns=10, size=28, pad=2):
    """The rows of an images.image_grid picture (uint8 (h, w, C)): (rows, columns, size,
    size, C)."""
    rows = (grid.shape[0] - pad) // (size + pad)
    assert grid.shape[:2] == (rows * (size + pad) + pad, columns * (size + pad) + pad)
    return np.stack([np.stack([grid[pad + r * (size + pad):(r + 1) * (size + pad),
                                    pad + c * (size + pad):(c + 1) * (size + pad)]
                               for c in range(columns)]) for r in range(rows)])


def assert_reconstructs(model, inputs, reconstructed, shown):
    """`reconstructed` (a grid row, uint8) is what `model` makes of the grid row `inputs`,
    and nearer the `shown` clean images than grey is.

    Tolerance: the inputs of the row were rounded to 8 bits, and so were its outputs:
    measured 0.2 grey levels apart on average; an earlier epoch's model, or an untrained
    one, is tens of levels away. Grey 128 is 121 levels from these digits on average,
    the model's reconstructions 79."""
    pixels = tf.sigmoid(model.predict(inputs.astype(np.float32) / 255, verbose=0)).numpy()
    assert np.abs(np.round(pixels * 255) - reconstructed).mean() <= 1
    error = np.abs(reconstructed.astype(float) - shown).mean()
    assert error < np.abs(128.0 - shown).mean()


def events(directory):
    accumulator = EventAccumulator(directory, size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator, tag):
    return [event.step for event in accumulator.Tensors(tag)]


def values(accumulator, tag):
    return [float(tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


def test_scalars_every_epoch(run):
    train, validation = events(os.path.join(run, "train")), events(os.path.join(run, "validation"))
    for tag in ["epoch_loss", "epoch_rmse", "epoch_bce", "epoch_mse"]:
        assert steps(train, tag) == [0, 1], tag
        assert steps(validation, tag) == [0, 1], tag
    assert values(train, "epoch_learning_rate") == pytest.approx([0.001, 0.001])
    norms = values(train, "gradient_norm")
    assert steps(train, "gradient_norm") == [0, 1]
    assert all(math.isfinite(n) and n > 0 for n in norms)
    assert steps(train, "steps_per_second") == [0, 1]
    assert all(s > 0 for s in values(train, "steps_per_second"))
    # The logged losses are the epochs' (a log of other values, or of one epoch twice, fails).
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    for name in ["loss", "rmse", "bce", "mse"]:
        assert values(train, f"epoch_{name}") == pytest.approx(
            [float(row[name]) for row in rows], rel=1e-6), name
        assert values(validation, f"epoch_{name}") == pytest.approx(
            [float(row[f"val_{name}"]) for row in rows], rel=1e-6), name


def test_histograms_of_weights_and_activations(run):
    train, validation = events(os.path.join(run, "train")), events(os.path.join(run, "validation"))
    weights = sorted(t for t in train.Tags()["tensors"] if t.startswith("weights/"))
    assert weights == sorted(f"weights/{layer}/{kind}" for layer in WEIGHT_LAYERS
                             for kind in ("kernel", "bias"))
    for tag in weights:
        assert steps(train, tag) == [0, 1]
        buckets = tf.make_ndarray(train.Tensors(tag)[-1].tensor_proto)
        assert buckets.ndim == 2 and buckets.shape[1] == 3  # (left, right, count) per bucket
    kernel = tf.make_ndarray(train.Tensors("weights/encoder/block0_conv0/kernel")[0].tensor_proto)
    assert kernel[:, 2].sum() == 3 * 3 * 1 * 16  # every weight counted once
    for layer in HIDDEN_LAYERS:
        assert steps(validation, f"activations/{layer}") == [0, 1]
        fractions = values(validation, f"zero_fraction/{layer}")
        assert len(fractions) == 2 and all(0 <= f <= 1 for f in fractions)
    activations = tf.make_ndarray(
        validation.Tensors("activations/encoder/block0_conv0")[0].tensor_proto)
    assert activations[:, 2].sum() == 256 * 28 * 28 * 16  # one fixed validation batch
    assert not any(t.startswith("zero_fraction/decoder/linear") for t in validation.Tags()["tensors"])


def test_reconstruction_images_in_tensorboard_and_png(run):
    validation = events(os.path.join(run, "validation"))
    assert steps(validation, "reconstructions") == [0, 1]
    summary = validation.Tensors("reconstructions")[-1]
    width, height, png = tf.make_ndarray(summary.tensor_proto)
    # rows: input, noisy input, reconstruction, of 10 images of 28x28 with 2-pixel gaps
    assert (int(width), int(height)) == (10 * 30 + 2, 3 * 30 + 2)
    assert sorted(os.listdir(os.path.join(run, "images"))) == [
        f"step_{STEPS_PER_EPOCH:05d}.png", f"step_{2 * STEPS_PER_EPOCH:05d}.png"]
    with open(os.path.join(run, "images", f"step_{2 * STEPS_PER_EPOCH:05d}.png"), "rb") as f:
        saved = tf.io.decode_png(f.read()).numpy()
    np.testing.assert_array_equal(saved, tf.io.decode_png(png).numpy())
    # Content: the first 10 test images, noisy versions of them, and the final model's
    # reconstructions of those (a grid of other images, or of another model's output,
    # or of grey 0.5 everywhere, fails).
    shown, noisy, reconstructed = grid_rows(saved)
    test_images = load_mnist_sample().test.images[:10]
    np.testing.assert_array_equal(shown, test_images)
    assert not np.array_equal(noisy, shown)
    assert_reconstructs(load_model(run), noisy, reconstructed, test_images)


def test_graph_hparams_and_test_metrics(run):
    assert events(os.path.join(run, "train")).Tags()["graph"]
    root = events(run)
    (start,) = root.Tensors("_hparams_/session_start_info")
    content = root.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["noise_factor"].number_value == pytest.approx(0.3)
    assert hparams["num_filters"].string_value == "16,8,8"
    assert hparams["dropout"].number_value == 1.0  # keep probability: no dropout
    # Every setting that changes the model or its training, so that the HParams tab can
    # compare variants (a missing one makes runs that differ in it look alike).
    config = run_record(run)
    assert hparams["downsample"].string_value == "pool"
    assert hparams["upsample"].string_value == "transpose"
    assert hparams["code_l1"].number_value == 0 and hparams["beta"].number_value == 1
    assert hparams["convs_per_block"].number_value == 2 and hparams["kernel_size"].number_value == 3
    assert hparams["output_layer"].bool_value is True
    assert hparams["code_size"].number_value == 0  # none: the last map is the code
    assert hparams["precision"].string_value == config["precision"] != "auto"
    assert hparams["learning_rate"].number_value == pytest.approx(0.001)
    test_metrics = json.load(open(os.path.join(run, "test_metrics.json")))
    for name in ["loss", "rmse", "bce", "mse"]:
        assert steps(root, f"test/{name}") == [1]
        assert values(root, f"test/{name}") == pytest.approx([test_metrics[name]])


def read_projector(directory):
    reader = tf.train.load_checkpoint(directory)
    codes = reader.get_tensor(TENSOR_NAME)
    with open(os.path.join(directory, "metadata.tsv")) as f:
        header, *rows = f.read().splitlines()
    with open(os.path.join(directory, "projector_config.pbtxt")) as f:
        config = f.read()
    with open(os.path.join(directory, "sprite.png"), "rb") as f:
        sprite = tf.io.decode_png(f.read()).numpy()
    return codes, header, rows, config, sprite


def test_projector_files_agree(run):
    """By content too: the codes are the final model's of the first EMBEDDING_IMAGES test
    images with the run's noise (drawn from its seed), and the sprite shows those
    images. Codes of other images, of an untrained model, or a sprite of other images
    fail."""
    from tf_autoencoder.data.pipeline import noisy_inputs

    codes, header, rows, config, sprite = read_projector(os.path.join(run, "projector"))
    assert codes.shape == (EMBEDDING_IMAGES, CODE_SIZE)
    assert header == "label\tindex" and len(rows) == EMBEDDING_IMAGES
    labels = [int(row.split("\t")[0]) for row in rows]
    test = load_mnist_sample().test
    assert labels == test.labels[:EMBEDDING_IMAGES].tolist()
    cols = math.ceil(math.sqrt(EMBEDDING_IMAGES))  # 15
    assert sprite.shape == (math.ceil(EMBEDDING_IMAGES / cols) * 28, cols * 28, 1)
    np.testing.assert_array_equal(sprite, sprite_image(test.images[:EMBEDDING_IMAGES])[0])
    run_config = run_record(run)
    inputs, _ = noisy_inputs(test.images[:EMBEDDING_IMAGES], run_config["noise_factor"],
                             np.random.default_rng(run_config["seed"]))
    expected = load_model(run).encoder.predict(inputs, verbose=0)
    np.testing.assert_allclose(codes, expected.reshape(EMBEDDING_IMAGES, -1), atol=1e-5, rtol=0)
    assert 'image_path: "sprite.png"' in config and "single_image_dim: 28" in config
    assert 'metadata_path: "metadata.tsv"' in config and TENSOR_NAME in config


def test_sprite_tiles_inverts_and_shrinks():
    images = np.zeros((5, 3, 2, 1), np.uint8)
    images[4] = 200
    sprite, size = sprite_image(images)
    assert size == (3, 2) and sprite.shape == (2 * 3, 3 * 2, 1)  # 3 columns, 2 rows
    assert (sprite[3:6, 2:4] == 55).all()  # the fifth image, inverted
    assert (sprite[3:6, 4:6] == 255).all()  # an empty cell stays white
    tall = np.zeros((4, 6000, 10, 1), np.uint8)
    sprite, (height, width) = sprite_image(tall)
    assert max(sprite.shape) <= 8192 and sprite.shape[:2] == (2 * height, 2 * width)


def test_write_projector_rejects_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="3 codes, 2 labels"):
        write_projector(str(tmp_path), np.zeros((3, 4)), np.zeros(2), np.zeros((3, 2, 2, 1)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base, path, **params):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_tensorboard_server_serves_scalars_images_and_projector(run):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", run, "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # until the server answers and has read every run
            try:
                if {"train", "validation", "projector"} <= set(json.loads(get(base, "/data/runs"))):
                    break
            except OSError:
                pass
            assert server.poll() is None, "tensorboard exited"
            assert time.monotonic() < deadline, "tensorboard did not load the runs in time"
            time.sleep(1)
        scalars = json.loads(get(base, "/data/plugin/scalars/tags"))
        assert {"epoch_loss", "epoch_rmse", "gradient_norm", "steps_per_second",
                "epoch_learning_rate"} <= set(scalars["train"])
        assert "zero_fraction/encoder/block0_conv0" in scalars["validation"]
        images = json.loads(get(base, "/data/plugin/images/tags"))
        assert "reconstructions" in images["validation"]
        assert json.loads(get(base, "/data/plugin/projector/runs")) == ["projector"]
        info = json.loads(get(base, "/data/plugin/projector/info", run="projector"))
        (embedding,) = info["embeddings"]
        assert embedding["tensorName"] == TENSOR_NAME
        assert embedding["tensorShape"] == [EMBEDDING_IMAGES, CODE_SIZE]
        tensor = get(base, "/data/plugin/projector/tensor", run="projector", name=TENSOR_NAME)
        assert len(tensor) == EMBEDDING_IMAGES * CODE_SIZE * 4  # float32
        metadata = get(base, "/data/plugin/projector/metadata", run="projector",
                       name=TENSOR_NAME).decode().splitlines()
        assert len(metadata) == EMBEDDING_IMAGES + 1
        sprite = get(base, "/data/plugin/projector/sprite_image", run="projector", name=TENSOR_NAME)
        assert sprite.startswith(b"\x89PNG")
        # What it serves is the run's projector files, not only their sizes.
        codes, header, rows, _, _ = read_projector(os.path.join(run, "projector"))
        served = np.frombuffer(tensor, "<f4").reshape(EMBEDDING_IMAGES, CODE_SIZE)
        np.testing.assert_array_equal(served, codes)
        assert metadata == [header, *rows]
        with open(os.path.join(run, "projector", "sprite.png"), "rb") as f:
            assert sprite == f.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_export_embeddings_writes_the_training_codes_and_npy_tsv(run, tmp_path):
    out = str(tmp_path / "emb")
    assert export_embeddings("--model_dir", run, "--what", "embedding", "--images", "50",
                             "--output", out, "--save_npy", "--save_tsv") == 0
    codes, header, rows, _, sprite = read_projector(out)
    assert codes.shape == (50, CODE_SIZE) and len(rows) == 50
    assert sprite.shape == (math.ceil(50 / 8) * 28, 8 * 28, 1)
    # the same weights, images and noise as the projector written after training
    trained, *_ = read_projector(os.path.join(run, "projector"))
    np.testing.assert_allclose(codes, trained[:50], atol=1e-5)
    np.testing.assert_array_equal(np.load(os.path.join(out, "codes.npy")), codes)
    tsv = np.loadtxt(os.path.join(out, "codes.tsv"), delimiter="\t")
    np.testing.assert_allclose(tsv, codes, rtol=1e-5, atol=1e-6)
    labels = np.loadtxt(os.path.join(out, "labels.tsv"), dtype=int)
    assert labels.tolist() == [int(row.split("\t")[0]) for row in rows]


@pytest.mark.parametrize("noise, rows", [(None, 3), ("0", 2)])
def test_export_embeddings_reconstruction_grid(run, tmp_path, noise, rows, monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):  # no window
        monkeypatch.delenv(name, raising=False)
    out = str(tmp_path / "grid.png")
    args = ["--model_dir", run, "--what", "reconstruction", "--output", out]
    assert export_embeddings(*args, *(["--noise_factor", noise] if noise else [])) == 0
    with open(out, "rb") as f:
        grid = tf.io.decode_png(f.read()).numpy()
    # the run's noise_factor 0.3 adds the noisy row unless --noise_factor 0
    assert grid.shape == (rows * 30 + 2, 10 * 30 + 2, 1)
    # Content: the first 10 test images, then (with noise) noisy versions of them, then
    # the trained model's reconstructions of the row above (other images, another
    # model's output, or grey 0.5 everywhere fail).
    shown, *inputs, reconstructed = grid_rows(grid)
    test_images = load_mnist_sample().test.images[:10]
    np.testing.assert_array_equal(shown, test_images)
    if noise is None:
        assert not np.array_equal(inputs[0], shown)
    assert_reconstructs(load_model(run), (inputs or [shown])[0], reconstructed, test_images)


def test_export_embeddings_bad_input_is_one_line(tmp_path):
    result = run_script("export_embeddings.py", "--model_dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "config.json" in result.stderr


def test_overwrite_removes_the_runs_tensorboard_logs_only(tmp_path):
    from tf_autoencoder.config import Config
    from tf_autoencoder.model_dir import clear_run

    model_dir = tmp_path / "run"
    (model_dir / "projector").mkdir(parents=True)
    (model_dir / "projector" / "sprite.png").write_bytes(b"")
    (model_dir / "events.out.tfevents.1.host.1.v2").write_bytes(b"")
    (model_dir / "notes.txt").write_text("mine")
    config = Config(model_dir=str(model_dir), image_shape=[28, 28, 1])
    config.save(str(model_dir / "config.json"))
    clear_run(config.model_dir)
    assert sorted(os.listdir(model_dir)) == ["notes.txt"]
