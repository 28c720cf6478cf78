"""Crashes, Ctrl-C, diverging losses, damaged checkpoints and bad input: `train.py` in
subprocesses that are killed by signal, and the checkpoint code in-process."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import forked_commands

from conftest import (REFERENCE_RUN, copy_run, history, idx_bytes, latest_checkpoint, run_train,
                      snapshot, start_paused, train_command, write_idx_dir)
from tf_autoencoder.errors import RunError

# 62 steps per epoch on the sample's 4,000 training images: conftest's reference_run.
SHORT_RUN = REFERENCE_RUN
STEPS_PER_EPOCH = 4000 // 64


def our_lines(stderr):
    """stderr without TensorFlow's start-up logging."""
    return [line for line in stderr.splitlines() if line.startswith("train.py:")]


# Where the signal tests stop training: step 5 of the second epoch.
SIGNAL_STEP = STEPS_PER_EPOCH + 5


def start_and_signal_in_second_epoch(model_dir, signum):
    """Starts a run, waits until it has finished epoch 1 and step 5 of epoch 2, then sends
    `signum`; returns the finished process and its stderr."""
    process = start_paused([*SHORT_RUN, "--model_dir", model_dir], SIGNAL_STEP)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=240)
    return process, "".join(process.lines_before) + stderr


@pytest.fixture(scope="module")
def uninterrupted(reference_run):
    """The history of SHORT_RUN run without interruption."""
    return history(reference_run)


def final_val_loss(rows):
    return float(rows[-1]["val_loss"])


def test_sigkill_mid_epoch_then_rerun_resumes_from_the_last_finished_epoch(tmp_path, uninterrupted):
    model_dir = str(tmp_path / "run")
    process, _ = start_and_signal_in_second_epoch(model_dir, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert latest_checkpoint(model_dir) == f"ckpt-{STEPS_PER_EPOCH}"
    assert [row["epoch"] for row in history(model_dir)] == ["0"]

    result = run_train(*SHORT_RUN, "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    assert "Resuming from the end of epoch 1" in result.stdout
    rows = history(model_dir)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert rows[0] == uninterrupted[0]  # the first epoch was not trained again
    # The optimizer step (and with it the learning-rate schedule) went on from 62.
    assert latest_checkpoint(model_dir) == f"ckpt-{3 * STEPS_PER_EPOCH}"
    reference = final_val_loss(uninterrupted)
    assert abs(final_val_loss(rows) - reference) <= 0.02 * reference


def test_ctrl_c_saves_at_a_batch_boundary_and_the_rerun_finishes(tmp_path, uninterrupted):
    model_dir = str(tmp_path / "run")
    process, stderr = start_and_signal_in_second_epoch(model_dir, signal.SIGINT)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    [line] = our_lines(stderr)
    assert "interrupted" in line and "epoch 2, step" in line and model_dir in line
    assert "rerun the same command" in line
    saved_step = int(latest_checkpoint(model_dir).split("-")[1])
    assert saved_step == SIGNAL_STEP  # the step at which the signal came
    assert f"ckpt-{saved_step}" in line and "epoch 2, step 5;" in line
    assert [row["epoch"] for row in history(model_dir)] == ["0"]  # epoch 2 is not finished

    result = run_train(*SHORT_RUN, "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    steps_into_epoch = saved_step - STEPS_PER_EPOCH
    assert f"from step {steps_into_epoch} of epoch 2" in result.stdout
    rows = history(model_dir)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    # The interrupted epoch ran again in full, after the steps it had already taken.
    assert latest_checkpoint(model_dir) == f"ckpt-{3 * STEPS_PER_EPOCH + steps_into_epoch}"
    # It trained those extra steps, so it ends at least about as good as the reference.
    assert final_val_loss(rows) <= 1.02 * final_val_loss(uninterrupted)


def test_sigterm_saves_at_a_batch_boundary_like_ctrl_c_and_exits_143(tmp_path):
    model_dir = str(tmp_path / "run")
    process, stderr = start_and_signal_in_second_epoch(model_dir, signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    [line] = our_lines(stderr)
    assert "interrupted" in line and "epoch 2, step" in line and "rerun the same command" in line
    saved_step = int(latest_checkpoint(model_dir).split("-")[1])
    assert saved_step == SIGNAL_STEP
    assert f"ckpt-{saved_step}" in line


def test_ctrl_c_before_training_starts_exits_130_without_a_traceback(tmp_path):
    process = subprocess.Popen(train_command(*SHORT_RUN, "--model_dir", str(tmp_path / "run")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("Data:")  # next: TensorFlow loads, for seconds
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    [line] = our_lines(stderr)
    assert "interrupted" in line and "rerun the same command" in line


def test_a_ctrl_c_that_an_import_swallows_still_stops_before_training(tmp_path, monkeypatch,
                                                                     capsys):
    """Under load, Ctrl-C has landed inside an import that catches every exception: train.py
    then trained on and exited 0. It remembers the Ctrl-C and stops before training."""
    from tf_autoencoder import cli
    from tf_autoencoder.data import sources

    load_data = sources.load_data

    def load_data_swallowing_a_ctrl_c(*args, **kwargs):
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # what Ctrl-C calls
        except KeyboardInterrupt:
            pass  # as `try: import x` / `except BaseException` would
        return load_data(*args, **kwargs)

    monkeypatch.setattr(sources, "load_data", load_data_swallowing_a_ctrl_c)
    code = cli.main(["train", "--dataset", "mnist_sample", "--epochs", "1",
                           "--model_dir", str(tmp_path / "run")])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path, finished_run):
    model_dir = copy_run(finished_run, tmp_path / "run")  # one epoch, batch 32: ckpt-125
    args = ["--dataset", "mnist_sample", "--batch_size", "32", "--seed", "3",  # finished_run's
            "--model_dir", model_dir]
    checkpoints_before = snapshot(os.path.join(model_dir, "checkpoints"))
    model_before = snapshot(os.path.join(model_dir, "model.keras"))

    result = run_train(*args, "--epochs", "2", "--learning_rate", "1e6")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = our_lines(result.stderr)
    assert "nan" in line.lower() or "inf" in line.lower()
    assert "epoch 2, step" in line and "--learning_rate" in line and "ckpt-125" in line
    assert snapshot(os.path.join(model_dir, "checkpoints")) == checkpoints_before
    assert snapshot(os.path.join(model_dir, "model.keras")) == model_before
    assert [row["epoch"] for row in history(model_dir)] == ["0"]

    # The kept checkpoint trains on with a sane learning rate.
    result = run_train(*args, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "Resuming from the end of epoch 1" in result.stdout
    assert np.isfinite(float(history(model_dir)[-1]["val_loss"]))


def test_nan_in_the_first_epoch_saves_nothing(tmp_path):
    model_dir = tmp_path / "run"
    result = run_train("--dataset", "mnist_sample", "--seed", "1", "--epochs", "1",
                       "--learning_rate", "1e6", "--model_dir", str(model_dir))
    assert result.returncode == 1
    [line] = our_lines(result.stderr)
    assert "epoch 1, step" in line and "no checkpoint" in line
    assert not (model_dir / "model.keras").exists()
    assert not (model_dir / "checkpoints" / "checkpoint").exists()


def test_deterministic_runs_with_the_same_seed_have_identical_histories(tmp_path):
    write_idx_dir(tmp_path / "idx", n_train=600, n_test=40)  # 550 training images
    args = ["--data_dir", str(tmp_path / "idx"), "--batch_size", "64", "--seed", "7",
            "--epochs", "2", "--deterministic", "--noise_factor", "0.3", "--dropout", "0.9"]
    processes = {}  # the two runs at once, each in its own process
    for name in ["first", "second"]:
        with open(tmp_path / f"{name}.stderr", "w") as stderr:
            processes[name] = forked_commands.start(
                train_command(*args, "--model_dir", str(tmp_path / name))[1:],
                stdout=subprocess.DEVNULL, stderr=stderr)
    histories = []
    try:
        for name, process in processes.items():
            process.wait(timeout=300)
            assert process.returncode == 0, (tmp_path / f"{name}.stderr").read_text()
            histories.append(open(tmp_path / name / "history.csv").read())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    assert histories[0] == histories[1]
    assert len(histories[0].splitlines()) == 3
    assert json.load(open(tmp_path / "first" / "config.json"))["deterministic"] is True


# --- bad input: one line, the right exit status, model_dir untouched -----------------

@pytest.fixture(scope="module")
def finished_run(trained_run):
    """A one-epoch run on the sample that every bad command must leave as it is
    (conftest's trained_run: batch 32, seed 3)."""
    return trained_run[0]


def _idx_dir_with(tmp_path, damage):
    directory = tmp_path / "idx"
    write_idx_dir(directory, n_train=60, n_test=10)
    damage(directory)
    return str(directory)


def _truncate(directory):
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])


def _wrong_magic(directory):
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x03" + path.read_bytes()[4:])


def _fewer_labels(directory):
    (directory / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59, np.uint8)))


def _damaged_gzip(directory):
    path = directory / "t10k-images-idx3-ubyte"
    path.unlink()
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 60)


def _tiny_images(directory):
    write_idx_dir(directory, n_train=60, n_test=10, size=4)


SAMPLE = ["--dataset", "mnist_sample"]
BAD_INPUT = {
    "data_dir missing": (["--data_dir", "/nonexistent/idx"], 1, "does not exist"),
    "idx truncated": (_truncate, 1, "truncated"),
    "idx wrong magic": (_wrong_magic, 1, "magic number"),
    "idx counts disagree": (_fewer_labels, 1, "60 images but 59 labels"),
    "idx gzip damaged": (_damaged_gzip, 1, "cannot read"),
    "images too small": (_tiny_images, 2, "too small for 3 pooling blocks"),
    "unknown dataset": (["--dataset", "no_such_dataset_xyz"], 2, "unknown dataset"),
    "num_filters empty": (SAMPLE + ["--num_filters="], 2, "num_filters is empty"),
    "num_filters zero": (SAMPLE + ["--num_filters", "16,0,8"], 2, "positive integers"),
    "num_filters negative": (SAMPLE + ["--num_filters=-16,8"], 2, "positive integers"),
    "num_filters not numbers": (SAMPLE + ["--num_filters", "a,b"], 2, "comma-separated integers"),
    "hidden_units empty": (SAMPLE + ["--model", "fully_connected", "--hidden_units="], 2,
                           "hidden_units is empty"),
    "hidden_units zero": (SAMPLE + ["--model", "fully_connected", "--hidden_units", "128,0"], 2,
                          "positive integers"),
    "hidden_units negative": (SAMPLE + ["--model", "fully_connected", "--hidden_units=-5"], 2,
                              "positive integers"),
    "batch_size zero": (SAMPLE + ["--batch_size", "0"], 2, "batch_size must be >= 1"),
    "batch_size above train set": (SAMPLE + ["--batch_size", "4001"], 2,
                                   "larger than the training set"),
    "noise_factor negative": (SAMPLE + ["--noise_factor", "-0.1"], 2, "noise_factor must be >= 0"),
    "dropout zero": (SAMPLE + ["--dropout", "0"], 2, "keep probability in (0, 1]"),
    "dropout above one": (SAMPLE + ["--dropout", "1.5"], 2, "keep probability in (0, 1]"),
    "learning_rate zero": (SAMPLE + ["--learning_rate", "0"], 2, "learning_rate must be > 0"),
    "learning_rate negative": (SAMPLE + ["--learning_rate", "-0.1"], 2, "learning_rate must be > 0"),
    "epochs zero": (SAMPLE + ["--epochs", "0"], 2, "epochs must be >= 1"),
    "seed negative": (SAMPLE + ["--seed", "-1"], 2, "seed must be in"),
    "other architecture": (SAMPLE + ["--num_filters", "8,8"], 2, "different model"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_gets_one_line_and_leaves_model_dir_alone(tmp_path, finished_run, case):
    args, code, words = BAD_INPUT[case]
    if callable(args):
        args = ["--data_dir", _idx_dir_with(tmp_path, args), "--batch_size", "16"]
    before = snapshot(finished_run)
    result = run_train(*args, "--model_dir", finished_run)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert result.stderr.startswith("train.py: error: ")
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("model", ["convolutional", "variational"])
def test_images_too_small_for_the_encoder_are_refused_before_model_dir_is_made(tmp_path, model):
    """Catches a size check for the convolutional model only: the variational one, built
    from the same encoder, failed with a traceback after model_dir was made."""
    args = ["--data_dir", _idx_dir_with(tmp_path, _tiny_images), "--batch_size", "16",
            "--model", model, "--model_dir", str(tmp_path / "run")]
    result = run_train(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("train.py: error: 4x4 images are too small for 3 pooling")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_model_dir_that_is_a_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    result = run_train(*SAMPLE, "--model_dir", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is a file" in result.stderr
    assert path.read_text() == "mine\n"


def test_verbose_shows_the_traceback(tmp_path):
    result = run_train("--data_dir", str(tmp_path / "missing"), "--verbose",
                       "--model_dir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DataError" in result.stderr


# --- checkpoints in-process: damaged files, kills mid-save ----------------------------

def small_model():
    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.run.training import compile_model

    config = Config(image_shape=[8, 8, 1], num_filters=[4]).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    return model


def checkpointer(directory):
    from tf_autoencoder.run.training import EpochCheckpoint

    model = small_model()
    callback = EpochCheckpoint(model, str(directory))
    callback.set_model(model)
    return model, callback


def save_epochs(directory, epochs):
    """Saves `epochs` epoch-end checkpoints of changing weights; returns each epoch's weights."""
    model, callback = checkpointer(directory)
    saved = []
    for epoch in range(epochs):
        for w in model.trainable_weights:
            w.assign(np.full(w.shape, epoch + 1.0, dtype=np.float32))
        model.optimizer.iterations.assign((epoch + 1) * 10)
        callback.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.5})
        saved.append([w.numpy() for w in model.trainable_weights])
    return saved


def restore_into_new_model(directory):
    model, callback = checkpointer(directory)
    logged = []
    epochs = callback.restore(log=logged.append)
    return model, epochs, logged


def _cut_data_file(prefix):
    with open(prefix + ".data-00000-of-00001", "r+b") as f:
        f.truncate(10)


def _remove_index(prefix):
    os.unlink(prefix + ".index")


def _garble_index(prefix):
    with open(prefix + ".index", "r+b") as f:
        f.write(b"\xde\xad" * 64)


@pytest.mark.parametrize("index", ["garbage\n", None])
def test_a_damaged_or_missing_checkpoint_index_is_recovered_from_the_files(tmp_path, index):
    """`echo garbage > checkpoints/checkpoint` used to make a rerun start again at epoch 1
    and overwrite the readable checkpoints; now the files themselves are restored and the
    index is rewritten from them."""
    import tensorflow as tf

    saved = save_epochs(tmp_path, 3)
    if index is None:
        os.unlink(tmp_path / "checkpoint")
    else:
        (tmp_path / "checkpoint").write_text(index)
    model, epochs, logged = restore_into_new_model(tmp_path)
    assert epochs == 3
    for got, want in zip(model.trainable_weights, saved[-1]):
        np.testing.assert_array_equal(got.numpy(), want)
    assert any("recovering it from the 3 checkpoint files" in line for line in logged), logged
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-10", "ckpt-20", "ckpt-30"]


@pytest.mark.parametrize("damage", [_cut_data_file, _remove_index, _garble_index])
def test_restore_falls_back_to_the_previous_checkpoint_if_the_newest_is_damaged(tmp_path, damage):
    saved = save_epochs(tmp_path, 3)
    damage(str(tmp_path / "ckpt-30"))
    model, epochs, logged = restore_into_new_model(tmp_path)
    assert epochs == 2
    assert int(model.optimizer.iterations) == 20
    for weight, expected in zip(model.trainable_weights, saved[1]):
        np.testing.assert_array_equal(weight.numpy(), expected)
    assert any("ckpt-30" in line and "cannot be read" in line for line in logged)


def test_restore_refuses_when_no_checkpoint_can_be_read(tmp_path):
    save_epochs(tmp_path, 2)
    for prefix in ("ckpt-10", "ckpt-20"):
        _remove_index(str(tmp_path / prefix))
    _, callback = checkpointer(tmp_path)
    with pytest.raises(RunError, match="--overwrite"):
        callback.restore(log=lambda line: None)


def test_leftovers_of_a_killed_save_are_removed_and_the_last_checkpoint_used(tmp_path):
    save_epochs(tmp_path, 2)
    leftover = tmp_path / "ckpt-30_temp"
    leftover.mkdir()
    (leftover / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x00" * 7)
    _, epochs, logged = restore_into_new_model(tmp_path)
    assert epochs == 2 and logged == []
    assert not leftover.exists()


KILLED_SAVER = """
import sys
sys.path.insert(0, {tests!r})
from test_reliability import checkpointer
model, callback = checkpointer({directory!r})
print("ready", flush=True)
epoch = 0
while True:
    model.optimizer.iterations.assign((epoch + 1) * 10)
    callback.on_epoch_end(epoch, {{"loss": 0.5}})
    epoch += 1
    print("saved", epoch, flush=True)
"""


def test_sigkill_during_saves_never_leaves_the_run_unable_to_resume(tmp_path):
    # A process that does nothing but save checkpoints is killed right after it says a
    # save is done, so the kill lands in the next save, at whatever point it has reached.
    tests = os.path.dirname(os.path.abspath(__file__))
    for saves_before_kill in (1, 3):
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_SAVER.format(tests=tests, directory=str(tmp_path))],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert process.stdout.readline() == "ready\n"
        for saves in range(1, saves_before_kill + 1):
            assert process.stdout.readline() == f"saved {saves}\n"
        process.kill()
        process.wait()
        _, epochs, _ = restore_into_new_model(tmp_path)
        assert epochs >= saves_before_kill


def test_resume_drops_history_rows_that_no_checkpoint_holds(tmp_path):
    from tf_autoencoder.run.training import trim_history

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n3,0.2")  # the last row cut short
    trim_history(str(path), 2)
    assert path.read_text() == "epoch,loss\n0,0.5\n1,0.4\n"


# --- resuming is the uninterrupted run: random state, evaluation noise -------------------

# The default model with dropout (its generators) and the VAE (its sampling); the default
# model without dropout has no generator to check, and the same pipeline as these.
RESUMED_MODELS = {"dropout": ["--dropout", "0.9"], "variational": ["--model", "variational"]}


def checkpoint_values(model_dir):
    """Every value of a run's newest checkpoint (weights, optimizer, counters, random
    state) by name, but the count of saves."""
    import tensorflow as tf

    path = os.path.join(model_dir, "checkpoints", latest_checkpoint(model_dir))
    return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
            if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


@pytest.mark.parametrize("model", RESUMED_MODELS)
def test_a_run_killed_mid_epoch_and_resumed_is_the_uninterrupted_run_bit_for_bit(tmp_path, model):
    """--deterministic, killed in epoch 2 and resumed from the end of epoch 1, against the
    same command run through: the same history, test metrics and checkpoint, bit for bit.
    Catches a resumed run that draws its dropout masks or VAE noise from the seed's first
    draws again (the generators' states were not in the checkpoint), and validation or
    test noise that depends on where the run was resumed (it was seeded seed + epoch)."""
    write_idx_dir(tmp_path / "idx", n_train=120, n_test=20)  # 110 / 10 / 20
    args = ["--data_dir", str(tmp_path / "idx"), "--batch_size", "16", "--epochs", "2",
            "--seed", "5", "--deterministic", "--noise_factor", "0.3", "--embedding_images",
            "0", "--precision", "float32", *RESUMED_MODELS[model]]
    through, resumed = str(tmp_path / "through"), str(tmp_path / "resumed")
    first = forked_commands.start(train_command(*args, "--model_dir", through)[1:],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        killed = start_paused([*args, "--model_dir", resumed], 110 // 16 + 2)
        killed.kill()
        killed.wait()
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    result = run_train(*args, "--model_dir", resumed)
    assert result.returncode == 0, result.stderr
    assert "Resuming from the end of epoch 1" in result.stdout

    assert history(resumed) == history(through)
    assert (open(os.path.join(resumed, "test_metrics.json")).read()
            == open(os.path.join(through, "test_metrics.json")).read())
    expected = checkpoint_values(through)
    got = checkpoint_values(resumed)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert any(name.startswith("random_state/") for name in got)


def dropout_model():
    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.run.training import compile_model

    config = Config(image_shape=[8, 8, 1], num_filters=[4], dropout=0.5,
                    model="variational").validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    return model


def test_checkpoints_hold_the_random_generators_states_at_an_epoch_end_and_at_ctrl_c(tmp_path):
    """The end-of-epoch and the Ctrl-C save both carry every generator's state (one per
    dropout layer, the VAE's sampling), and a new model restores them."""
    from tf_autoencoder.errors import Interrupted
    from tf_autoencoder.run.training import EpochCheckpoint, random_states

    model = dropout_model()
    callback = EpochCheckpoint(model, str(tmp_path))
    callback.set_model(model)
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    states = []
    for step, save in [(10, "epoch end"), (13, "ctrl-c")]:
        model(x, training=True)  # draws: every generator's state moves on
        states.append([s.numpy().copy() for s in random_states(model)])
        model.optimizer.iterations.assign(step)  # checkpoints are named by the step
        if save == "epoch end":
            callback.on_epoch_end(0)
        else:
            callback.interrupted = signal.SIGINT
            with pytest.raises(Interrupted):
                callback.on_train_batch_end(2, {"loss": 0.5})
    dropout_layers = [layer for part in model.parts for layer in part.layers
                      if "dropout" in layer.name]
    assert dropout_layers and len(states[0]) == len(dropout_layers) + 1  # and the sampling
    assert all(not np.array_equal(a, b) for a, b in zip(*states))

    for epochs, expected in [(1, states[0]), (2, states[1])]:
        restored = dropout_model()
        logged = []
        EpochCheckpoint(restored, str(tmp_path)).restore(log=logged.append, epochs=epochs)
        for state, want in zip(random_states(restored), expected):
            np.testing.assert_array_equal(state.numpy(), want)


def test_lowering_epochs_after_a_ctrl_c_restores_the_end_of_the_last_epoch(tmp_path):
    """A Ctrl-C in epoch 2, then a rerun with --epochs 1: the newest checkpoint holds part
    of epoch 2, which the run said it did not hold and then exported. It must restore
    the end of epoch 1 and say why."""
    from tf_autoencoder.errors import Interrupted

    model, callback = checkpointer(tmp_path)
    for value, save in [(1.0, "epoch end"), (2.0, "ctrl-c")]:
        for w in model.trainable_weights:
            w.assign(np.full(w.shape, value, np.float32))
        model.optimizer.iterations.assign(int(10 * value))
        if save == "epoch end":
            callback.on_epoch_end(0, {"loss": 0.5})
        else:
            callback.current_epoch, callback.interrupted = 1, signal.SIGINT
            with pytest.raises(Interrupted):
                callback.on_train_batch_end(4, {"loss": 0.5})

    restored, again = checkpointer(tmp_path)
    logged = []
    assert again.restore(log=logged.append, epochs=1) == 1
    assert int(again.steps_into_epoch.numpy()) == 0 and int(restored.optimizer.iterations) == 10
    assert all((w.numpy() == 1.0).all() for w in restored.trainable_weights)
    assert any("ckpt-20" in line and "5 steps of epoch 2" in line for line in logged)

    restored, again = checkpointer(tmp_path)
    assert again.restore(log=lambda line: None, epochs=2) == 1  # to train on: the newest
    assert int(again.steps_into_epoch.numpy()) == 5 and int(restored.optimizer.iterations) == 20


def test_a_checkpoint_without_random_state_still_resumes(tmp_path):
    """Checkpoints saved before the generators' states were: the run resumes and says
    that dropout and sampling start from the seed's first draws again."""
    import tensorflow as tf

    from tf_autoencoder.run.training import EpochCheckpoint

    model = dropout_model()
    old = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                              epoch=tf.Variable(3, dtype=tf.int64),
                              steps_into_epoch=tf.Variable(0, dtype=tf.int64))
    tf.train.CheckpointManager(old, str(tmp_path), 3).save(checkpoint_number=30)
    logged = []
    assert EpochCheckpoint(dropout_model(), str(tmp_path)).restore(log=logged.append) == 3
    assert any("no random-number state" in line for line in logged), logged


def test_a_diverged_epoch_end_reaches_neither_history_nor_tensorboard(tmp_path, monkeypatch):
    """Weights broken by an epoch's last step: val_loss is NaN at the epoch's end. Only
    history.csv was trimmed on the rerun, and TensorBoard, which had logged the epoch,
    got two values at its step. The check now comes before anything logs it."""
    import keras
    import tensorflow as tf

    from tf_autoencoder import cli
    from tf_autoencoder.run import training

    class BreakWeightsAtTheLastStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 110 // 16 - 1:
                for w in self.model.trainable_weights:
                    w.assign(tf.fill(w.shape, float("nan")))

    monkeypatch.setattr(training.PauseAtStep, "from_environment",
                        classmethod(lambda cls: [BreakWeightsAtTheLastStep()]))
    write_idx_dir(tmp_path / "idx", n_train=120, n_test=20)
    model_dir = tmp_path / "run"
    code = cli.main(["train", "--data_dir", str(tmp_path / "idx"), "--batch_size", "16",
                     "--epochs", "1", "--seed", "5", "--model_dir", str(model_dir)])
    assert code == 1
    assert not (model_dir / "history.csv").exists() or history(str(model_dir)) == []
    scalars = [value.tag for run in ("train", "validation")
               for path in (model_dir / run).glob("events.out.*")
               for event in tf.compat.v1.train.summary_iterator(str(path))
               for value in event.summary.value]
    assert not [tag for tag in scalars if tag.startswith("epoch_")], scalars
