"""Evaluation metrics, the evaluate and sample commands, and benchmarks/quality.py."""
import importlib.util
import json
import math
import os
import re

import numpy as np
import pytest

import forked_commands

from conftest import REPO, copy_run, run_python
from tf_autoencoder.data import sources
from tf_autoencoder.run.evaluation import (PSNR_CAP_DB, knn_accuracy, linear_probe_accuracy,
                                       reconstruction_metrics)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def grid_tiles(path, rows, columns, size=28, pad=2):
    """The rows * columns tiles of an images.image_grid PNG, row by row: uint8
    (rows * columns, size, size, C). Asserts the gaps between them are white."""
    import tensorflow as tf

    with open(path, "rb") as f:
        grid = tf.io.decode_png(f.read()).numpy()
    assert grid.shape[:2] == (rows * (size + pad) + pad, columns * (size + pad) + pad)
    gaps = np.ones(grid.shape[:2], bool)
    tiles = []
    for r in range(rows):
        for c in range(columns):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            tiles.append(grid[top:top + size, left:left + size])
            gaps[top:top + size, left:left + size] = False
    assert (grid[gaps] == 255).all()
    return np.stack(tiles)


def test_perfect_reconstruction_has_capped_psnr_and_ssim_1():
    logits = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype(np.float32)
    images = 1 / (1 + np.exp(-logits.astype(np.float64)))
    metrics = reconstruction_metrics(images.astype(np.float32), logits)
    assert metrics["mse"] < 1e-12
    assert metrics["psnr"] == PSNR_CAP_DB
    np.testing.assert_allclose(metrics["ssim"], 1.0, atol=1e-5)
    # BCE against soft targets bottoms out at their entropy, not 0.
    entropy = -np.mean(images * np.log(images) + (1 - images) * np.log(1 - images))
    np.testing.assert_allclose(metrics["bce"], entropy, rtol=1e-4)


def test_known_error_gives_the_hand_computed_metrics():
    # Every pixel 0.4, every reconstruction 0.6: MSE 0.04, PSNR 10 log10(1 / 0.04).
    # Constant windows have no variance, so SSIM is its luminance term alone (up to
    # float32 round-off in the windows' variances, which SSIM divides by C2 = 9e-4).
    images = np.full((2, 12, 12, 1), 0.4, np.float32)
    logits = np.full_like(images, math.log(0.6 / 0.4))
    metrics = reconstruction_metrics(images, logits)
    c1 = 0.01**2
    np.testing.assert_allclose(metrics["mse"], 0.04, rtol=1e-5)
    np.testing.assert_allclose(metrics["psnr"], 10 * math.log10(1 / 0.04), rtol=1e-5)
    np.testing.assert_allclose(metrics["ssim"], (2 * 0.4 * 0.6 + c1) / (0.4**2 + 0.6**2 + c1),
                               atol=1e-3)
    np.testing.assert_allclose(metrics["bce"], -(0.4 * math.log(0.6) + 0.6 * math.log(0.4)),
                               rtol=1e-5)


def toy_codes(n, seed, separable=True):
    """Codes (n, 2, 2, 2) in three far-apart clusters, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.eye(3, 8) * 10
    codes = rng.normal(size=(n, 8)) + (centres[labels] if separable else 0)
    return codes.reshape(n, 2, 2, 2).astype(np.float32), labels


def test_linear_probe_and_knn_on_separable_codes_score_100_percent():
    train, test = toy_codes(300, 0), toy_codes(150, 1)
    assert linear_probe_accuracy(*train, *test) >= 0.99
    assert knn_accuracy(*train, *test) >= 0.99


def test_linear_probe_on_codes_without_information_is_near_chance():
    train, test = toy_codes(300, 0, separable=False), toy_codes(300, 1, separable=False)
    assert linear_probe_accuracy(*train, *test) < 0.5


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """Four epochs of the variational model on the MNIST sample, batch 32 (500 steps).

    Long enough to beat the trivial models of sample_baselines: one epoch at the default
    batch of 256 (15 steps, what this run was before) reconstructed worse than the mean
    image (BCE 0.535, MSE 0.154 against its 0.267, 0.069) and with the SSIM of a constant
    grey image (0.0046 against 0.0050); one epoch at batch 32 (125 steps) still did not
    beat the mean image (BCE 0.390). Four epochs at batch 32 did, on seeds 1, 2 and 3:
    BCE 0.206 to 0.227, MSE 0.049 to 0.057, SSIM 0.22 to 0.31. About 20 s on 2 cores."""
    model_dir = str(tmp_path_factory.mktemp("vae"))
    result = forked_commands.run(
        [os.path.join(REPO, "train.py"), "--dataset", "mnist_sample",
         "--model", "variational", "--epochs", "4", "--batch_size", "32", "--seed", "2",
         "--model_dir", model_dir], timeout=300)
    assert result.returncode == 0, result.stderr
    return model_dir


def test_variational_run_reports_kl(vae_run):
    metrics = json.load(open(os.path.join(vae_run, "test_metrics.json")))["metrics"]
    assert metrics["kl"] > 0
    assert metrics["loss"] > metrics["bce"]


# The evaluate and sample commands on the run call their main in this process, which has
# imported TensorFlow already; test_evaluate_and_sample_refuse_what_they_cannot_use runs
# them as `python -m`.

@pytest.fixture(scope="module")
def sample_baselines():
    """What trivial models score on the MNIST sample's 500 test images, the images the
    evaluate command scores a run of it on.

    Reconstructions (reconstruction_metrics): "constant", a grey 0.5 for every pixel
    (logits 0): BCE ln 2 = 0.693, MSE 0.231, SSIM 0.005; "mean_image", the training
    split's mean image for every test image: BCE 0.267, MSE 0.069, PSNR 11.8 dB, SSIM 0.116.
    Its pixels are kept 1 / (2 * 4,000) from 0 and 1, as a mean of 4,000 images can
    resolve, so that its BCE is finite where no training image has ink.

    Codes: "chance", the most frequent test label's share (0.114); "thumbnail", the
    linear probe's and 5-NN's accuracy on a 2x2 thumbnail of each image (the mean of each
    quadrant: how much ink, and where, in 4 numbers; fitted on all 4,000 training images):
    0.50 and 0.49. A random projection of the pixels to the codes' size (128) is no
    bound: it keeps the pixels' distances, and scored 0.83 and 0.86, as much as the
    VAE's codes after four epochs (0.86 and 0.81)."""
    splits = sources.load_mnist_sample()
    train = splits.train.images.astype(np.float64) / 255
    test = splits.test.images.astype(np.float32) / 255
    mean = np.clip(train.mean(axis=0), 0.5 / len(train), 1 - 0.5 / len(train))
    mean_logits = np.broadcast_to(np.log(mean) - np.log1p(-mean), test.shape)

    def thumbnail(images):  # (N, 28, 28, 1) -> (N, 2, 2): the mean of each quadrant
        return images.reshape(len(images), 2, 14, 2, 14).mean(axis=(2, 4))

    thumbnails = (thumbnail(train), splits.train.labels,
                  thumbnail(test.astype(np.float64)), splits.test.labels)
    return {
        "constant": reconstruction_metrics(test, np.zeros_like(test)),
        "mean_image": reconstruction_metrics(test, mean_logits.astype(np.float32)),
        "chance": np.bincount(splits.test.labels).max() / len(splits.test),
        "thumbnail": {"linear_probe_accuracy": linear_probe_accuracy(*thumbnails),
                      "knn_accuracy": knn_accuracy(*thumbnails)},
    }


def test_evaluate_command_writes_evaluation_json_and_prints_a_table(vae_run, capsys,
                                                                    sample_baselines):
    """The metrics must beat the trivial models of sample_baselines, so a model that
    outputs grey 0.5 everywhere (BCE 0.693, MSE 0.231, SSIM 0.005), or the mean image
    for every input, fails it, and so do codes that do not follow their images (random
    codes, or codes paired with other images' labels, score about chance, 0.1)."""
    from tf_autoencoder.cli import main

    assert main(["evaluate", vae_run, "--probe_samples", "1000"]) == 0
    out = capsys.readouterr().out
    assert "linear probe accuracy (1,000 train codes)" in out
    assert out.splitlines()[1] == "inputs: clean test images (no noise), scored against themselves"
    assert out.splitlines()[-2] == f"Wrote {os.path.join(vae_run, 'evaluation.json')}"
    # 500 test, 1,000 probe and 500 validation images: catches counting the whole
    # training split (4,000) instead of the probe's share.
    assert re.fullmatch(r"Evaluated 2,000 images in [\d.]+ s, [\d,]+ images/s: 500 test, "
                        r"1,000 training \(the probes'\), 500 validation \(the threshold's\)",
                        out.splitlines()[-1]), out
    report = json.load(open(os.path.join(vae_run, "evaluation.json")))
    assert report["inputs"] == "clean test images (no noise), scored against themselves"
    assert "training_test_metrics" not in report  # the run trained without noise
    m = report["metrics"]
    assert report["test_images"] == 500 and report["probe_train_images"] == 1000
    assert 0 < m["bce"] < 1 and 0 < m["mse"] < 0.25 and 0 < m["psnr"] < PSNR_CAP_DB
    assert -1 <= m["ssim"] <= 1
    assert 0.2 < m["linear_probe_accuracy"] <= 1 and 0.2 < m["knn_accuracy"] <= 1  # chance: 0.1
    # Measured (seed 2): BCE 0.206, MSE 0.049, PSNR 13.2 dB, SSIM 0.31 against the mean
    # image's 0.267, 0.069, 11.8 dB, 0.116; probe 0.86, 5-NN 0.81 against the
    # thumbnail's 0.50, 0.49.
    constant, mean_image = sample_baselines["constant"], sample_baselines["mean_image"]
    for name in ("bce", "mse"):
        assert m[name] < mean_image[name] < constant[name], (name, m[name], mean_image[name])
    for name in ("psnr", "ssim"):
        assert m[name] > mean_image[name] > constant[name], (name, m[name], mean_image[name])
    thumbnail = sample_baselines["thumbnail"]
    for name in ("linear_probe_accuracy", "knn_accuracy"):
        assert m[name] > thumbnail[name] > sample_baselines["chance"], (name, m[name], thumbnail)


def test_sample_of_more_images_than_memory_holds_is_one_line(vae_run, tmp_path, capsys):
    """`sample --n 10**10` used to be killed by the kernel without a word."""
    from tf_autoencoder.cli import main

    out = tmp_path / "samples.png"
    assert main(["sample", vae_run, "--n", str(10**10), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB of memory" in err and "lower --n" in err, err
    assert not out.exists()


def test_evaluate_of_a_denoising_run_says_its_numbers_are_not_trainings(vae_run, tmp_path,
                                                                        capsys):
    """A run trained with noise reports test metrics of noisy inputs; evaluate's are of
    clean ones, and it says so (the same run, marked as trained with noise_factor 0.3)."""
    from tf_autoencoder.cli import main

    run = copy_run(vae_run, tmp_path / "run")
    config = json.load(open(os.path.join(run, "config.json")))
    config["noise_factor"] = 0.3
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)
    assert main(["evaluate", run, "--probe_samples", "200"]) == 0
    out = capsys.readouterr().out.splitlines()
    note = ("test_metrics.json and training's Test line score inputs with noise_factor 0.3 "
            "noise, not clean ones")
    table = out.index("inputs: clean test images (no noise), scored against themselves")
    assert table == 1 and f"({note})" in out[table:]
    assert json.load(open(os.path.join(run, "evaluation.json")))["training_test_metrics"] == note


def test_sample_command_writes_a_grid_of_generated_images(vae_run, tmp_path):
    from tf_autoencoder.cli import main

    out = str(tmp_path / "samples.png")
    assert main(["sample", vae_run, "--n", "10", "--out", out]) == 0
    # 10 images -> 4 columns, 3 rows of 28x28 with 2-pixel gaps.
    assert png_size(out) == (4 * 30 + 2, 3 * 30 + 2)
    # Content. Ten generated digits, then two empty (white) cells. A decoder that ignores
    # its code (the same image ten times) fails the first check; one that outputs grey
    # 0.5 fails the second: generated digits are dark with some ink, far nearer the mean
    # training image than grey is (measured: mean squared distance 0.044 against 0.164).
    tiles = grid_tiles(out, rows=3, columns=4).astype(np.float32) / 255
    generated = tiles[:10]
    assert (tiles[10:] == 1).all()
    assert len({tile.tobytes() for tile in generated}) == 10
    mean = sources.load_mnist_sample().train.images.astype(np.float32).mean(axis=0) / 255
    assert np.mean((generated - mean) ** 2) < np.mean((0.5 - mean) ** 2)


def test_evaluate_and_sample_refuse_what_they_cannot_use(tmp_path):
    result = run_python("-m", "tf_autoencoder", "evaluate", str(tmp_path / "nothing"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model": "convolutional"}))
    (tmp_path / "model.keras").write_bytes(b"")
    result = run_python("-m", "tf_autoencoder", "sample", str(tmp_path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "holds a convolutional model" in result.stderr


def load_quality_script():
    spec = importlib.util.spec_from_file_location(
        "quality", os.path.join(REPO, "benchmarks", "quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_report_keeps_other_datasets_sections(tmp_path):
    quality = load_quality_script()
    path = str(tmp_path / "Q.md")
    quality.update_report(path, "a", "table a\n")
    quality.update_report(path, "b", "table b\n")
    quality.update_report(path, "a", "new table a\n")
    text = open(path).read()
    assert text.count("Cross-check against the PyTorch reference.") == 1
    assert "new table a" in text and "table b" in text and "\ntable a" not in text


def test_quality_benchmark_smoke(tmp_path):
    """--quick: one epoch per variant on 256 training images; the tutorial model keeps its
    own loss and batch; with conv and fc, the paragraph on the post's claim."""
    out, images = tmp_path / "QUALITY.md", tmp_path / "img"
    result = forked_commands.run(
        [os.path.join(REPO, "benchmarks", "quality.py"), "--quick",
         "--dataset", "mnist_sample", "--variants", "conv,fc,tutorial_pooled",
         "--test_images", "40", "--out", str(out), "--images_dir", str(images)], timeout=600)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "## mnist_sample: 1 epoch\n" in text
    assert "256 training images, 40 test images." in text
    rows = {row[0]: row[1:] for row in re.findall(
        r"^\| (\w+) \| [^|]+ \| ([\d,]+) \| (\w+) \| (\d+) \| (\d+) \|", text, re.M)}
    # name -> weights, loss, batch, epochs
    assert rows == {"conv": ("7,873", "bce", "256", "1"), "fc": ("222,384", "bce", "256", "1"),
                    "tutorial_pooled": ("1,077", "mse", "20", "1")}
    assert re.search(r"\*\*The post's claim\.\*\* With 7,873 weights against 222,384 .*"
                     r"the claim (holds on every metric|holds on .*; not on .*)\.", text)
    row = next(line for line in text.splitlines() if line.startswith("| conv |"))
    assert "(img/mnist_sample/conv.png)" in row
    assert png_size(images / "mnist_sample" / "conv.png") == (10 * 30 + 2, 2 * 30 + 2)
    # Content. One step of training (256 images, batch 256) reconstructs nothing yet: its
    # BCE is within 6% of grey 0.5's, so no quality bound holds here. The picture's top
    # row must be the first 10 test images themselves (a grid of other images fails);
    # the bottom row something a model made of them: neither the images again nor one
    # flat grey (what a model that outputs 0.5 everywhere draws).
    tiles = grid_tiles(str(images / "mnist_sample" / "conv.png"), rows=2, columns=10)
    test = sources.load_mnist_sample().test
    np.testing.assert_array_equal(tiles[:10], test.images[:10])
    assert not np.array_equal(tiles[10:], test.images[:10])
    assert len(np.unique(tiles[10:])) > 1
    # The table's code accuracies are above chance on the 40 test images (the most
    # frequent label's share, 0.15): an untrained encoder's codes already are (measured:
    # 0.78 and 0.85); constant codes, or codes paired with other images' labels, score
    # about 0.1.
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    chance = np.bincount(test.labels[:40]).max() / 40
    assert float(cells[8]) > chance and float(cells[9]) > chance, (cells[8:10], chance)
