"""TensorBoard logs of a short training run, read back from the event files, from the
projector's files and from a real `tensorboard` server; and export_embeddings.py on the run."""
import csv
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

import forked_commands
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import REPO, run_record
from tf_autoencoder.images import sprite_image
from tf_autoencoder.run.projector import TENSOR_NAME, write_projector
from tf_autoencoder.data.sources import load_mnist_sample
from tf_autoencoder.run.summaries import shown_images


def chosen_test_images(run):
    """The sample's test images a run shows every epoch: one of each digit, as its seed
    chose them."""
    test = load_mnist_sample().test
    chosen = shown_images(test.labels, 10, run_record(run)["seed"])
    assert sorted(test.labels[chosen].tolist()) == list(range(10))
    return test.images[chosen]

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
    return forked_commands.run([os.path.join(REPO, script), *args], env=env, timeout=timeout)


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
    # Content: 10 test images, one of each class, noisy versions of them, and the final
    # model's reconstructions of those (a grid of other images, or of another model's
    # output, or of grey 0.5 everywhere, fails).
    shown, noisy, reconstructed = grid_rows(saved)
    test_images = chosen_test_images(run)
    np.testing.assert_array_equal(shown, test_images)
    assert not np.array_equal(noisy, shown)
    assert_reconstructs(load_model(run), noisy, reconstructed, test_images)


def test_anomaly_maps_of_the_shown_images_each_epoch(run):
    """The maps row: one coloured map per shown test image against the reconstruction
    the row above shows (of its noisy input), by conftest's NumPy/scipy reference,
    coloured the same way; the reconstructions come from the grid, rounded to 8 bits,
    hence the tolerance of a few levels. Catches maps of other images, of the noisy
    inputs against their reconstructions, or a constant picture."""
    import matplotlib
    from conftest import reference_anomaly_maps

    validation = events(os.path.join(run, "validation"))
    assert steps(validation, "anomaly_maps") == [0, 1]
    width, height, png = tf.make_ndarray(validation.Tensors("anomaly_maps")[-1].tensor_proto)
    assert (int(width), int(height)) == (10 * 30 + 2, 30 + 2)
    (row,) = grid_rows(tf.io.decode_png(png).numpy())  # (10, 28, 28, 3)
    test_images = chosen_test_images(run).astype(np.float32) / 255
    _, height, png = tf.make_ndarray(validation.Tensors("reconstructions")[-1].tensor_proto)
    reconstructions = grid_rows(tf.io.decode_png(png).numpy())[-1].astype(np.float32) / 255
    maps = reference_anomaly_maps(test_images, reconstructions, "l2", 4.0)
    want = np.round(matplotlib.colormaps["inferno"](maps / maps.max())[..., :3] * 255)
    assert row.std() > 10
    assert np.abs(row.astype(int) - want).mean() < 2 and np.abs(row.astype(int) - want).max() <= 12


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
    assert hparams["code_size"].string_value == "unset"  # the last map is the code
    assert hparams["precision"].string_value == config["precision"] != "auto"
    assert hparams["learning_rate"].number_value == pytest.approx(0.001)
    test_metrics = json.load(open(os.path.join(run, "test_metrics.json")))["metrics"]
    for name in ["loss", "rmse", "bce", "mse"]:
        assert steps(root, f"test_training_noise/{name}") == [1]
        assert values(root, f"test_training_noise/{name}") == pytest.approx([test_metrics[name]])


def test_training_names_what_its_test_metrics_score(run, denoising_run):
    """Training scores the test split with the run's input noise, `evaluate` without:
    the console line and test_metrics.json say which (a bare "Test:" line, or a flat
    file of numbers, fails), and the file names itself on the line."""
    path = os.path.join(run, "test_metrics.json")
    record = json.load(open(path))
    assert record["noise_factor"] == 0.3
    assert record["inputs"] == ("test images with noise_factor 0.3 noise (clipped to [0, 1]), "
                                "scored against the clean images")
    assert set(record["metrics"]) == {"loss", "rmse", "bce", "mse"}
    (line,) = [line for line in denoising_run[1].stdout.splitlines() if line.startswith("Test")]
    assert line.startswith("Test, noisy inputs (noise_factor 0.3) against clean images")
    assert "evaluate" in line and line.endswith(f" -> {path}")
    for name, value in record["metrics"].items():
        assert f"{name} {value:.5f}" in line


def test_test_metrics_files_of_either_format_are_read(tmp_path):
    """A finished run is read back (training on it again returns its test metrics):
    files written before they said what they score are flat."""
    from tf_autoencoder.run.summaries import read_test_metrics, write_test_metrics

    metrics = {"loss": 0.5, "rmse": 0.25}
    (tmp_path / "old.json").write_text(json.dumps(metrics))
    assert read_test_metrics(str(tmp_path / "old.json")) == metrics
    write_test_metrics(str(tmp_path / "new.json"), metrics, 0.0)
    assert read_test_metrics(str(tmp_path / "new.json")) == metrics
    assert json.load(open(tmp_path / "new.json"))["inputs"] == "clean test images (noise_factor 0)"


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


# --- what a browser gets from `tensorboard --logdir MODEL_DIR` ------------------------------
# The server is started as the README says, from the environment's own `tensorboard`, and
# asked what each tab of the web page asks it (the requests its JavaScript sends): every
# tab docs/tensorboard.md describes must have the content that page promises.

TENSORBOARD_DOC = os.path.join(REPO, "docs", "tensorboard.md")
# The plugin behind each tab named in the docs' table.
TAB_PLUGINS = {"Scalars": ["scalars"], "Images": ["images"],
               "Histograms, Distributions": ["histograms", "distributions"],
               "Graphs": ["graphs"], "HParams": ["hparams"], "Projector": ["projector"],
               "Text": ["text"]}
RUNS = {".", "train", "validation", "projector"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base, path, data=None, content_type=None, **params):
    url = f"{base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, data=data)
    if content_type:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def get_json(base, path, **params):
    return json.loads(get(base, path, **params))


def doc_table():
    """docs/tensorboard.md's tab table: [(tab, runs, what)], a row's empty tab being the
    row above's."""
    with open(TENSORBOARD_DOC) as f:
        lines = f.read().split("| tab | run | what |\n|---|---|---|\n", 1)[1].splitlines()
    rows, tab = [], None
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        tab = cells[0] or tab
        rows.append((tab, re.findall(r"`([^`]+)`", cells[1]), cells[2]))
    return rows


def documented(tab, run, tag):
    """Whether the docs' table names `tag` of `run` in `tab`'s rows: as a backticked name,
    where <anything> stands for one path component."""
    for row_tab, runs, what in doc_table():
        if row_tab != tab or run not in runs:
            continue
        for name in re.findall(r"`([^`]+)`", what):
            pattern = "[^/]+".join(re.escape(part) for part in re.split(r"<[^>]+>", name))
            if re.fullmatch(pattern, tag):
                return True
    return False


@pytest.fixture(scope="module")
def tensorboard(run):
    """`tensorboard --logdir MODEL_DIR` on the shared run, on 127.0.0.1 and a free port,
    once it has loaded every run and every tab the docs name has data (the plugins
    listing, which the page asks for first, enables them). Yields its base URL."""
    port = free_port()
    executable = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    server = subprocess.Popen([executable, "--logdir", run, "--host", "127.0.0.1",
                               "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    plugins = {plugin for tab, _, _ in doc_table() for plugin in TAB_PLUGINS[tab]}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                listing = get_json(base, "/data/plugins_listing")
                enabled = {name for name, plugin in listing.items() if plugin["enabled"]}
                if RUNS <= set(get_json(base, "/data/runs")) and plugins <= enabled:
                    break
            except OSError:
                pass
            assert server.poll() is None, f"tensorboard exited: {server.stderr.read()}"
            assert time.monotonic() < deadline, "tensorboard did not load the run in time"
            time.sleep(0.5)  # polling its HTTP API: there is no event to wait on
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def time_series(base, plugin, run, tag):
    """What the Scalars, Images and Histograms tabs fetch for one chart: the time series
    plugin's POST of `requests`, a JSON list of {plugin, tag, run} (and sample, for images)."""
    request = {"plugin": plugin, "tag": tag, "run": run, **({"sample": 0} if plugin == "images"
                                                            else {})}
    body = urllib.parse.urlencode({"requests": json.dumps([request])}).encode()
    (response,) = json.loads(get(base, "/data/plugin/timeseries/timeSeries", data=body,
                                 content_type="application/x-www-form-urlencoded"))
    assert "error" not in response, response
    return response["runToSeries"][run]


def test_every_scalar_has_values_and_is_in_the_docs_table(run, tensorboard):
    """Catches a tag written without values, one the docs' table does not name (the
    evaluation_*_vs_iterations that Keras adds, the test metrics under another name), and
    test metrics that are not the run's."""
    tags = get_json(tensorboard, "/data/plugin/timeseries/tags")["scalars"]["runTagInfo"]
    assert set(tags) == {".", "train", "validation"}
    assert {"epoch_loss", "epoch_rmse", "epoch_bce", "epoch_mse", "epoch_learning_rate",
            "gradient_norm", "steps_per_second"} <= set(tags["train"])
    assert {"epoch_loss", "zero_fraction/encoder/block0_conv0",
            "evaluation_loss_vs_iterations"} <= set(tags["validation"])
    test_metrics = json.load(open(os.path.join(run, "test_metrics.json")))["metrics"]
    assert sorted(tags["."]) == sorted(f"test_training_noise/{name}" for name in test_metrics)
    for name, tag_list in tags.items():
        for tag in tag_list:
            assert documented("Scalars", name, tag), (name, tag)
            series = time_series(tensorboard, "scalars", name, tag)
            assert series and all(math.isfinite(point["value"]) for point in series), (name, tag)
            if tag.startswith("epoch_") or tag.startswith(("gradient", "steps", "zero_")):
                assert [point["step"] for point in series] == [0, 1], (name, tag)
    for name, value in test_metrics.items():
        (point,) = time_series(tensorboard, "scalars", ".", f"test_training_noise/{name}")
        assert point["step"] == 1 and point["value"] == pytest.approx(value), name


def test_images_tab_serves_the_reconstructions_png(run, tensorboard):
    """The picture of the last epoch as served is the PNG written for it."""
    info = get_json(tensorboard, "/data/plugin/timeseries/tags")["images"]["tagRunSampledInfo"]
    assert info == {"reconstructions": {"validation": {"maxSamplesPerStep": 1}},
                    "anomaly_maps": {"validation": {"maxSamplesPerStep": 1}}}
    assert documented("Images", "validation", "reconstructions")
    assert documented("Images", "validation", "anomaly_maps")
    series = time_series(tensorboard, "images", "validation", "reconstructions")
    assert [point["step"] for point in series] == [0, 1]
    png = get(tensorboard, "/data/plugin/timeseries/imageData", imageId=series[-1]["imageId"])
    with open(os.path.join(run, "images", f"step_{2 * STEPS_PER_EPOCH:05d}.png"), "rb") as f:
        assert png == f.read()


def test_histograms_and_distributions_tabs_serve_every_weight_and_activation(tensorboard):
    """Every weight (train) and hidden layer's activations (validation), each epoch, with
    buckets that count the values (an empty or all-zero histogram fails)."""
    tags = get_json(tensorboard, "/data/plugin/timeseries/tags")["histograms"]["runTagInfo"]
    assert sorted(tags["train"]) == sorted(f"weights/{layer}/{kind}" for layer in WEIGHT_LAYERS
                                           for kind in ("kernel", "bias"))
    assert sorted(tags["validation"]) == sorted(f"activations/{layer}" for layer in HIDDEN_LAYERS)
    for name, tag_list in tags.items():
        for tag in tag_list:
            assert documented("Histograms, Distributions", name, tag), (name, tag)
            series = time_series(tensorboard, "histograms", name, tag)
            assert [point["step"] for point in series] == [0, 1], (name, tag)
            assert all(sum(b["count"] for b in point["bins"]) > 0 for point in series), tag
    (first, _) = time_series(tensorboard, "histograms", "validation",
                             "activations/encoder/block0_conv0")
    assert sum(b["count"] for b in first["bins"]) == 256 * 28 * 28 * 16  # the fixed batch
    distributions = get_json(tensorboard, "/data/plugin/distributions/tags")
    assert set(distributions["train"]) == set(tags["train"])


def test_graphs_tab_serves_the_models_graph(tensorboard):
    info = get_json(tensorboard, "/data/plugin/graphs/info")
    assert info["train"]["run_graph"]
    graph = get(tensorboard, "/data/plugin/graphs/graph", run="train", conceptual="false").decode()
    assert "block0_conv0" in graph and "linear" in graph  # the encoder's and decoder's layers


def hparams_request(base, route, request):
    """What the HParams tab sends: a POST of the JSON request as text/plain."""
    return json.loads(get(base, f"/data/plugin/hparams/{route}",
                          data=json.dumps(request).encode(), content_type="text/plain"))


def test_hparams_tab_shows_the_settings_and_the_test_metrics(run, tensorboard):
    """The tab's two requests, as its page makes them: the experiment (which columns),
    then the session groups with a column for every hyperparameter and metric. Catches
    metric columns that stay empty (metricValues [], as when the metrics are looked up in
    a run named "./." because the logdir is the model_dir itself), and values that are
    not the run's."""
    experiment = hparams_request(tensorboard, "experiment",
                                 {"experimentName": "", "hparamsLimit": 1000})
    hparams = [info["name"] for info in experiment["hparamInfos"]]
    assert {"noise_factor", "num_filters", "batch_size", "learning_rate"} <= set(hparams)
    metrics = [info["name"] for info in experiment["metricInfos"]]
    assert sorted(m["tag"] for m in metrics) == sorted(
        f"test_training_noise/{name}" for name in ("loss", "rmse", "bce", "mse"))
    assert all("noise" in info["description"] for info in experiment["metricInfos"])
    groups = hparams_request(tensorboard, "session_groups", {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"],
        "colParams": [{"hparam": name, "includeInResult": True} for name in hparams]
                     + [{"metric": name, "includeInResult": True} for name in metrics],
        "startIndex": 0, "sliceSize": 100})
    (group,) = groups["sessionGroups"]
    assert group["hparams"]["noise_factor"] == pytest.approx(0.3)
    assert group["hparams"]["num_filters"] == "16,8,8"
    test_metrics = json.load(open(os.path.join(run, "test_metrics.json")))["metrics"]
    shown = {value["name"]["tag"].split("/")[1]: value["value"]
             for value in group["metricValues"]}
    assert shown == pytest.approx(test_metrics)
    assert documented("HParams", ".", "test_training_noise/rmse")


def test_projector_and_text_tabs_serve_the_codes_metadata_and_sprite(run, tensorboard):
    base = tensorboard
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
    assert get_json(base, "/data/plugin/text/tags") == {"projector": ["embedding"]}
    (text,) = get_json(base, "/data/plugin/text/text", run="projector", tag="embedding")
    assert f"Latent codes of {EMBEDDING_IMAGES:,} test images" in text["text"]


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
