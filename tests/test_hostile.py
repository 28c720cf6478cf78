"""What a hostile but realistic user does to a finished run and to the commands: each
case ends in one line (or is handled), writes nothing half-done, and loses no record.
Every test names the failure it catches; most use a copy of one shared finished run."""
import errno
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import REPO, copy_run, error_lines, run_python, run_train, snapshot
from tf_autoencoder.cli import describe
from tf_autoencoder.errors import WriteError
from tf_autoencoder.files import write_bytes_atomic


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of a finished run (one epoch on the sample, exported as export/1)."""
    return copy_run(trained_run[0], tmp_path / "run")


def tree_without_lock(path):
    """snapshot() of a model_dir but its lock file (which holds the last holder's pid)."""
    return {name: digest for name, digest in snapshot(path).items()
            if os.path.basename(name) != ".lock"}


def one_line(result, code):
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_rerun_of_a_finished_run_with_other_flags_changes_no_file(run):
    """It used to rewrite config.json with settings the model never trained with."""
    before = tree_without_lock(run)
    result = run_train("--dataset", "mnist_sample", "--epochs", "1", "--model_dir", run,
                       "--learning_rate", "0.5", "--noise_factor", "0.9", "--batch_size", "32",
                       "--seed", "77")
    assert result.returncode == 0, result.stderr
    assert "nothing to train or export" in result.stdout
    assert tree_without_lock(run) == before


@pytest.mark.parametrize("field, value, command", [
    ("image_shape", [100000, 100000, 1], "export"),
    ("num_filters", [100000, 8, 8], "export"),
    ("num_filters", [100000, 8, 8], "evaluate"),
    ("kernel_size", 5, "train"),
])
def test_a_config_json_edited_after_training_is_refused_naming_file_and_field(
        run, field, value, command):
    """export used to publish a 100000x100000 version, or die of memory building a
    100000-filter model; evaluate and a rerun read the edited settings as the run's."""
    path = os.path.join(run, "config.json")
    with open(path) as f:
        config = json.load(f)
    config[field] = value
    with open(path, "w") as f:
        json.dump(config, f)
    before = tree_without_lock(run)
    if command == "train":
        result = run_train("--model_dir", run, "--epochs", "2", "--kernel_size", "5")
    else:
        result = run_python("-m", "tf_autoencoder", command, run)
    line = one_line(result, 2)
    assert "config.json" in line and field in line, line
    assert tree_without_lock(run) == before


@pytest.mark.parametrize("content", ["[]", "null", "{not json"])
def test_a_config_json_that_is_not_the_settings_is_one_line_for_every_command(run, content):
    """`[]` used to end in a 26-line AttributeError from train, export and evaluate."""
    with open(os.path.join(run, "config.json"), "w") as f:
        f.write(content)
    for args in (["-m", "tf_autoencoder", "export", run],
                 ["-m", "tf_autoencoder", "evaluate", run],
                 ["train.py", "--model_dir", run, "--epochs", "2"]):
        line = one_line(run_python(*args), 2)
        assert "config.json" in line, line


def test_a_run_without_its_seed_is_refused_then_resumes_with_seed(run):
    """A run whose record lost its seed used to fail in tf.Variable with a ValueError."""
    path = os.path.join(run, "run.json")
    with open(path) as f:
        facts = json.load(f)
    facts["seed"] = None
    with open(path, "w") as f:
        json.dump(facts, f)
    line = one_line(run_train("--model_dir", run, "--epochs", "2"), 2)
    assert "records no seed" in line and "--seed" in line
    result = run_train("--model_dir", run, "--epochs", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Resuming from the end of epoch 1" in result.stdout


def test_save_images_on_a_file_is_a_usage_error_before_anything_is_written(tmp_path):
    """It used to fail after 10 s with [Errno 17], exit 1, config.json and logs written."""
    photo = tmp_path / "existing.jpg"
    photo.write_bytes(b"\xff\xd8")
    result = run_train("--dataset", "mnist_sample", "--model_dir", str(tmp_path / "m"),
                       "--save_images", str(photo))
    assert "--save_images" in one_line(result, 2)
    assert not (tmp_path / "m").exists()


def test_an_empty_or_looping_model_dir_is_a_usage_error(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    for model_dir, words in (("", "empty"), (str(loop), "loop")):
        result = run_train("--dataset", "mnist_sample", "--model_dir", model_dir)
        assert words in one_line(result, 2)


def png_header_only(width, height):
    """A PNG whose header claims width x height pixels, with a one-row image body: what
    a decompression bomb's header looks like, without the megabytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * 8))) + chunk(b"IEND", b""))


def test_predict_refuses_an_image_above_the_pixel_limit_from_its_header(trained_run, tmp_path):
    """A 23000x23000 PNG used to get the process killed at 8 GiB, with no message and no
    output for the other files; now its header is read first."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(23000, 23000))
    from PIL import Image

    good = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(good)
    out = tmp_path / "out"
    result = run_python("-m", "tf_autoencoder", "predict", trained_run[0], str(bomb), str(good),
                        "--output_dir", str(out))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "bomb.png" in lines[0] and "--max_pixels" in lines[0], lines
    assert "23000 wide x 23000 high" in lines[0]
    assert os.listdir(out) == ["digit_reconstruction.png"]


def test_a_truncated_jpeg_is_our_line_alone(trained_run, tmp_path):
    """libjpeg's own 'Input file read error' line used to come before ours."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    result = run_python("-m", "tf_autoencoder", "predict", trained_run[0], str(truncated),
                        "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cut.jpg" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["export", "predict", "evaluate"])
def test_ctrl_c_in_any_command_is_one_line_exit_130_and_nothing_half_written(
        run, tmp_path, command):
    """Ctrl-C used to print 20 to 165 lines of traceback; an export could leave its
    temporary folder. The command pauses at a known point (pause.py) and gets SIGINT."""
    import signal

    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    args = {"export": [run], "evaluate": [run],
            "predict": [run, str(image), "--output_dir", str(tmp_path / "out")]}[command]
    before = tree_without_lock(run)
    process = subprocess.Popen(
        [sys.executable, "-m", "tf_autoencoder", command, *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "TF_AUTOENCODER_PAUSE_AT": command})
    waited = []
    for line in process.stderr:  # the pause point's line: the command is there now
        waited.append(line)
        if line.startswith(f"paused at {command}"):
            break
    assert waited and waited[-1].startswith("paused at"), waited
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert rest.count("\n") == 1 and rest.endswith(f"{command}: interrupted\n"), rest
    assert tree_without_lock(run) == before  # no new version, no temporary folder
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_a_full_disk_says_so_in_words_naming_the_file():
    """A full disk used to end in 30 to 55 lines of ResourceExhaustedError."""
    import tensorflow as tf

    line = describe(OSError(errno.ENOSPC, "No space left on device", "run/model.keras"))
    assert "disk is full" in line and "run/model.keras" in line
    tf_error = tf.errors.ResourceExhaustedError(
        None, None, "run/checkpoints/ckpt-15_temp/part-0; No space left on device")
    line = describe(tf_error)
    assert "disk is full" in line and "ckpt-15" in line and "\n" not in line
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert "out of memory" in describe(oom) and "--batch_size" in describe(oom)


def test_a_failed_write_names_the_file_the_user_knows_and_leaves_no_temporary(
        tmp_path, monkeypatch):
    """evaluate's errors used to name .tmp-XXXXevaluation.json."""
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "evaluation.json"
    with pytest.raises(WriteError) as error:
        write_bytes_atomic(str(target), b"{}")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert str(error.value) == f"cannot write {target}: the disk is full (no space left on device)"
    assert os.listdir(tmp_path) == []


def test_a_model_save_that_fails_leaves_no_temporary_model(tmp_path, monkeypatch):
    """A full disk while saving model.keras used to leave .tmp-model.keras behind."""
    import keras

    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.run.training import save_model_atomic

    model = build_autoencoder(Config(image_shape=[8, 8, 1], num_filters=[2]).validate())

    def save_then_fill_the_disk(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(keras.Model, "save", save_then_fill_the_disk)
    with pytest.raises(WriteError, match=r"model\.keras: the disk is full"):
        save_model_atomic(model, str(tmp_path / "model.keras"))
    assert os.listdir(tmp_path) == []


def test_temporary_files_of_dead_writers_go_and_live_ones_stay(tmp_path):
    from tf_autoencoder.files import remove_leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".tmp-{dead.pid}-00000000-history.csv").write_text("half")
    (tmp_path / f".tmp-{os.getpid()}-00000000-history.csv").write_text("writing")
    (tmp_path / ".tmp-notes").write_text("not ours")
    remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f".tmp-{os.getpid()}-00000000-history.csv", ".tmp-notes"])


def test_sizes_beyond_the_machine_are_one_line_not_the_kernels_kill():
    """`sample --n` of millions, or --max_pixels raised past the memory, used to leave
    the kernel to kill the process without a word."""
    from tf_autoencoder.errors import UsageError
    from tf_autoencoder.memory import available_bytes, check_fits

    assert available_bytes() > 0
    with pytest.raises(UsageError, match=r"--n 9 images needs about 1\.0 GiB of memory, more "
                                         r"than the 0\.5 GiB available: lower --n"):
        check_fits("--n 9 images", 2**30, "lower --n", available=2**29)
    check_fits("--n 9 images", 2**29, "lower --n", available=2**30)



def test_damaged_records_of_a_run_are_named_not_silently_reused(run, tmp_path):
    """A damaged history.csv used to collect new rows under a garbage header; a damaged
    test_metrics.json ended in a bare JSONDecodeError; a damaged model.keras in Keras'
    'File not found'."""
    from tf_autoencoder.run.training import trim_history

    history = tmp_path / "history.csv"
    history.write_text("garbage,,\n0,1,2\n")
    said = []
    trim_history(str(history), 1, log=said.append)
    assert not history.exists() and (tmp_path / "history.csv.damaged").exists()
    assert "damaged" in said[0]

    with open(os.path.join(run, "test_metrics.json"), "w") as f:
        f.write("{bad")
    line = one_line(run_train("--model_dir", run, "--epochs", "1"), 1)
    assert "test_metrics.json is damaged" in line and "delete it" in line, line

    with open(os.path.join(run, "model.keras"), "w") as f:
        f.write("garbage")
    line = one_line(run_python("-m", "tf_autoencoder", "export", run), 1)
    assert "model.keras is damaged" in line, line
