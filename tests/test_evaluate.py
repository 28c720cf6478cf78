"""Evaluation metrics, the evaluate and sample commands, and benchmarks/quality.py."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from tf_autoencoder.evaluation import (PSNR_CAP_DB, knn_accuracy, linear_probe_accuracy,
                                       reconstruction_metrics)


def run_module(module, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


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
    """One epoch of the variational model on the MNIST sample."""
    model_dir = str(tmp_path_factory.mktemp("vae"))
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--dataset", "mnist_sample",
         "--model", "variational", "--epochs", "1", "--seed", "2", "--model_dir", model_dir],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return model_dir


def test_variational_run_reports_kl(vae_run):
    metrics = json.load(open(os.path.join(vae_run, "test_metrics.json")))
    assert metrics["kl"] > 0
    assert metrics["loss"] > metrics["bce"]


# The evaluate and sample commands on the run call their main in this process, which has
# imported TensorFlow already; test_evaluate_and_sample_refuse_what_they_cannot_use runs
# them as `python -m`.

def test_evaluate_command_writes_evaluation_json_and_prints_a_table(vae_run, capsys):
    from tf_autoencoder import evaluate

    assert evaluate.main([vae_run, "--probe_samples", "1000"]) == 0
    assert "linear probe accuracy (1,000 train codes)" in capsys.readouterr().out
    report = json.load(open(os.path.join(vae_run, "evaluation.json")))
    m = report["metrics"]
    assert report["test_images"] == 500 and report["probe_train_images"] == 1000
    assert 0 < m["bce"] < 1 and 0 < m["mse"] < 0.25 and 0 < m["psnr"] < PSNR_CAP_DB
    assert -1 <= m["ssim"] <= 1
    assert 0.2 < m["linear_probe_accuracy"] <= 1 and 0.2 < m["knn_accuracy"] <= 1  # chance: 0.1


def test_sample_command_writes_a_grid_of_generated_images(vae_run, tmp_path):
    from tf_autoencoder import sample

    out = str(tmp_path / "samples.png")
    assert sample.main([vae_run, "--n", "10", "--out", out]) == 0
    # 10 images -> 4 columns, 3 rows of 28x28 with 2-pixel gaps.
    assert png_size(out) == (4 * 30 + 2, 3 * 30 + 2)


def test_evaluate_and_sample_refuse_what_they_cannot_use(tmp_path):
    result = run_module("tf_autoencoder.evaluate", str(tmp_path / "nothing"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr
    (tmp_path / "config.json").write_text(json.dumps({"model": "convolutional"}))
    (tmp_path / "model.keras").write_bytes(b"")
    result = run_module("tf_autoencoder.sample", str(tmp_path))
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
    assert text.count("Cross-check against the PyTorch reference: pending") == 1
    assert "new table a" in text and "table b" in text and "\ntable a" not in text


def test_quality_benchmark_smoke(tmp_path):
    out, images = tmp_path / "QUALITY.md", tmp_path / "img"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "quality.py"), "--dataset",
         "mnist_sample", "--variants", "conv", "--epochs", "1", "--train_images", "256",
         "--test_images", "40", "--out", str(out), "--images_dir", str(images)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "256 training images, 40 test images. Epochs: 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| conv |"))
    assert "| 7,873 |" in row and "(img/mnist_sample/conv.png)" in row
    assert png_size(images / "mnist_sample" / "conv.png") == (10 * 30 + 2, 2 * 30 + 2)
