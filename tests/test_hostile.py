"""What a hostile but realistic user does to a finished run and to the commands: each
case ends in one line (or is handled), writes nothing half-done, and loses no record.
Every test names the failure it catches; most use a copy of one shared finished run."""
import errno
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import forked_commands

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
    process = forked_commands.start(
        ["-m", "tf_autoencoder", command, *args], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "TF_AUTOENCODER_PAUSE_AT": command})
    waited = []
    for line in process.stderr:  # the pause point's line: the command is there now
        waited.append(line)
        if line.startswith(f"paused at {command}"):
            break
    assert waited and waited[-1].startswith("paused at"), waited
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
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


# --- round three: folders, caches and predict under a hostile user -------------------------

def image_folder(root, classes=("a", "b"), count=24, size=8, seed=0):
    """`count` random grey size x size PNGs per class folder under `root` (flat for
    classes=None); returns root as a string."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes or [""]:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size), np.uint8)).save(
                os.path.join(root, name, f"{i:02d}.png"))
    return str(root)


def main_status(capsys, *argv, command=None):
    """(exit status, stdout, stderr) of the command line run in this process."""
    from tf_autoencoder.cli import main

    try:
        status = main(list(argv), command=command)
    except SystemExit as e:  # the parser's usage errors
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def refuse_writes_in(monkeypatch, folder):
    """Makes creating a file in `folder` fail as in a read-only folder, for root too
    (root ignores the mode bits)."""
    os.chmod(folder, 0o500)
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)


def test_predict_never_writes_over_an_image_it_reads(run, tmp_path, capsys):
    """`predict R victim.png --csv victim.png` used to replace the image by the CSV, exit
    0; a reconstruction could overwrite an image of the folder given (an earlier
    a_reconstruction.png is an input, and a.png's output). Now refused before scoring."""
    folder = image_folder(tmp_path / "images", classes=None, count=2, size=28)
    victim = os.path.join(folder, "00.png")
    earlier = os.path.join(folder, "00_reconstruction.png")
    with open(victim, "rb") as f:
        open(earlier, "wb").write(f.read())
    before, run_before = snapshot(folder), tree_without_lock(run)
    status, out, err = main_status(capsys, "predict", run, victim, "--csv", victim,
                                   "--no_reconstructions")
    assert status == 2 and err.count("\n") == 1, err
    assert f"--csv {victim} is one of the files this command reads" in err
    status, out, err = main_status(capsys, "predict", run, folder, "--csv",
                                   os.path.join(folder, "01.png"))
    assert status == 2 and "01.png is one of the files this command reads" in err, err
    status, out, err = main_status(capsys, "predict", run, folder,
                                   "--output_dir", folder)
    assert status == 2 and f"would overwrite {earlier}" in err, err
    model = os.path.join(run, "model.keras")  # not read by predict: a record
    status, out, err = main_status(capsys, "predict", run, folder, "--csv", model)
    assert status == 2 and f"would overwrite {model}, a record of the run" in err, err
    assert tree_without_lock(run) == run_before
    assert "score" not in out  # refused before any image was scored
    assert snapshot(folder) == before


def test_outputs_that_would_destroy_the_run_or_the_data_are_refused(run, tmp_path, capsys):
    """Same class of failure elsewhere: embeddings --output onto the run's model.keras,
    train --overwrite when the data lies in what it clears, --save_images or model_dir
    inside the data (their PNGs become training images)."""
    before = tree_without_lock(run)
    status, _, err = main_status(capsys, "--model_dir", run, "--what", "reconstruction",
                                 "--output", os.path.join(run, "model.keras"),
                                 command="embeddings")
    assert status == 2 and "model.keras, a record of the run" in err, err
    data = image_folder(os.path.join(run, "train", "images"))  # in the logs --overwrite clears
    status, _, err = main_status(capsys, "train", "--model_dir", run, "--data_dir", data,
                                 "--overwrite")
    assert status == 2 and "--overwrite would delete" in err and data in err, err
    images = snapshot(data)
    assert len(images) == 48
    assert {name: digest for name, digest in tree_without_lock(run).items()
            if name not in images} == before
    data = image_folder(tmp_path / "data")
    for flag, path in (("--model_dir", os.path.join(data, "run")),
                       ("--save_images", os.path.join(data, "a", "shots"))):
        args = ["train", "--data_dir", data, "--model_dir", str(tmp_path / "m"), flag, path]
        status, _, err = main_status(capsys, *args)
        assert status == 2 and "inside --data_dir" in err, err
        assert not os.path.exists(path) and not (tmp_path / "m").exists()


def test_outputs_that_cannot_be_written_are_refused_before_any_work(
        trained_run, tmp_path, capsys, monkeypatch):
    """A read-only folder for --csv used to be found after scoring every image, and for
    --cache after decoding them, named by the temporary file."""
    folder = image_folder(tmp_path / "images", classes=None, count=2, size=28)
    locked = tmp_path / "locked"
    locked.mkdir()
    refuse_writes_in(monkeypatch, locked)
    try:
        status, out, err = main_status(capsys, "predict", trained_run[0], folder, "--csv",
                                       str(locked / "s.csv"))
        assert status == 1 and err.count("\n") == 1, err
        assert f"cannot write --csv {locked / 's.csv'} (Permission denied)" in err
        assert "Model:" not in out and ".tmp-" not in err
        status, out, err = main_status(capsys, "train", "--data_dir", image_folder(
            tmp_path / "data"), "--model_dir", str(tmp_path / "m"), "--cache", str(locked))
        assert status == 1 and f"cannot write --cache {locked} (Permission" in err, err
        assert "Caching" not in out and not (tmp_path / "m").exists()
        with pytest.raises(WriteError, match=f"cannot write {locked / 'x.json'}: "
                                             "Permission denied"):
            write_bytes_atomic(str(locked / "x.json"), b"{}")
        for flag in ("--model_dir", "--save_images"):
            args = {"--model_dir": str(tmp_path / "m"), flag: str(locked / "new")}
            status, out, err = main_status(capsys, "train", "--dataset", "mnist_sample",
                                           *[item for pair in args.items() for item in pair])
            assert status == 1 and f"{locked / 'new'} (Permission denied)" in err, err
            assert not (tmp_path / "m").exists()
        status, out, err = main_status(capsys, "predict", trained_run[0], folder,
                                       "--output_dir", str(locked / "out"))
        assert status == 1 and f"--output_dir {locked / 'out'} (Permission" in err, err
    finally:
        os.chmod(locked, 0o700)
    # And space: an output of known size is refused when its disk lacks the room.
    import shutil
    from collections import namedtuple

    from tf_autoencoder.files import check_writable

    full = namedtuple("usage", "total used free")(10**9, 10**9 - 10**5, 10**5)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)
    with pytest.raises(WriteError, match=r"cannot write --csv .*s\.csv: it needs about 1\.0 "
                                         r"MiB and its disk has 0\.1 MiB free"):
        check_writable("--csv", str(tmp_path / "s.csv"), 2**20)
    check_writable("--csv", str(tmp_path / "s.csv"), 10**4)


def test_a_failed_write_on_a_read_only_disk_names_the_file_not_its_temporary(
        tmp_path, monkeypatch):
    """On a read-only disk removing the temporary file that was never made fails too
    (EROFS), and that error used to replace the first, naming the temporary file."""
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "unlink", read_only)
    with pytest.raises(WriteError) as error:
        write_bytes_atomic(str(tmp_path / "train.npy"), b"x")
    assert str(error.value) == f"cannot write {tmp_path / 'train.npy'}: Read-only file system"


def open_cached(data, cache, said=None):
    from tf_autoencoder.commands import open_data
    from tf_autoencoder.config import Config

    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        splits = open_data(Config(data_dir=data, cache=cache).validate(), None, lambda: None)
    if said is not None:
        said.extend(buffer.getvalue().splitlines())
    return splits


@pytest.mark.parametrize("damage", ["pixels", "truncated", "header"])
def test_a_damaged_cache_file_is_said_and_made_again(tmp_path, damage):
    """Pixel bytes overwritten (header intact) used to be trained on silently; a cut or
    garbled file ended in InvalidArgumentError or numpy's 'magic string'. Now each is
    found when the cache is opened, said in one line naming it, and decoded anew."""
    data = image_folder(tmp_path / "data")
    cache = str(tmp_path / "cache")
    first = open_cached(data, cache)
    path = first.train.images.path
    want = first.train.images[:]
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if damage == "pixels":
            f.seek(size - 200)
            f.write(bytes(100))
        elif damage == "truncated":
            f.truncate(size - 50)
        else:
            f.write(b"garbage!")
    said = []
    again = open_cached(data, cache, said)
    damaged = [line for line in said if "is damaged (" in line]
    assert len(damaged) == 1 and damaged[0].startswith(f"The cache file {path} is damaged"), said
    np.testing.assert_array_equal(again.train.images[:], want)
    assert open_cached(data, cache).train.images.path == path  # now whole: reused


def test_a_cache_folder_inside_the_data_is_left_out_of_the_listing(tmp_path):
    """It used to be read as a class ('trained on 2 classes, not 3 (a, b, cache)') or to
    make a flat folder a mixed layout; so did an empty one made beforehand, at once."""
    from tf_autoencoder.commands import check_outputs_spare_data
    from tf_autoencoder.config import Config

    for classes in (("a", "b"), None):
        data = image_folder(tmp_path / str(bool(classes)), classes=classes)
        os.mkdir(os.path.join(data, "cache"))  # made by the user, empty
        check_outputs_spare_data(Config(data_dir=data, cache=os.path.join(data, "cache"),
                                        model_dir=str(tmp_path / "m")), None, False)
        first = open_cached(data, os.path.join(data, "cache"))
        again = open_cached(data, os.path.join(data, "cache"))
        assert again.class_names == first.class_names == (list(classes) if classes else None)
        assert again.source == first.source
        assert len(again.train) == len(first.train)


def changed_under_a_run(splits, change):
    """Iterates an epoch of the training split after `change()`, inside the command
    line's handler; returns the DataError it raises."""
    from tf_autoencoder.data.damage import naming_damaged_files
    from tf_autoencoder.data.pipeline import make_training_epochs
    from tf_autoencoder.errors import DataError

    change()
    with pytest.raises(DataError) as error:
        with naming_damaged_files(splits):
            for _ in make_training_epochs(splits.train.images, batch_size=4, epochs=range(1),
                                          seed=0):
                pass
    return str(error.value)


def test_a_file_deleted_resized_or_cut_under_a_run_is_named(tmp_path):
    """Deleted: 'NotFoundError: Graph execution error', not even caught; resized: an
    InvalidArgumentError that the search for the bad file missed (it resized too); a
    cache file cut short: 'Graph execution error'."""
    from PIL import Image

    from tf_autoencoder.data import sources

    data = image_folder(tmp_path / "data")
    splits = sources.load_data(data_dir=data)
    gone = splits.train.images.paths[3]
    line = changed_under_a_run(splits, lambda: os.unlink(gone))
    assert line.startswith(f"{gone} is gone (deleted or moved after the folder was listed)")
    image_folder(tmp_path / "data")  # whole again
    resized = splits.train.images.paths[5]
    line = changed_under_a_run(splits, lambda: Image.fromarray(
        np.zeros((10, 10), np.uint8)).save(resized))
    assert line.startswith(f"{resized} cannot be decoded") and "changed after" in line
    image_folder(tmp_path / "data")
    cached = open_cached(data, str(tmp_path / "cache"))
    path = cached.train.images.path
    line = changed_under_a_run(cached, lambda: os.truncate(path, os.path.getsize(path) // 2))
    assert line.startswith(f"the cache file {path} is damaged") and "run the command again" in line


def test_the_last_checkpoint_is_mentioned_only_when_there_is_one(tmp_path):
    """'the run keeps its last checkpoint' used to be said after a failure in the first
    epoch, when there was none."""
    from tf_autoencoder.data import sources
    from tf_autoencoder.data.damage import damaged_data

    data = image_folder(tmp_path / "data")
    splits = sources.load_data(data_dir=data)
    bad = splits.test.images.paths[0]
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)
    model_dir = tmp_path / "run"
    assert "keeps its last checkpoint" not in str(damaged_data(splits, str(model_dir)))
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    assert "the run keeps its last checkpoint" in str(damaged_data(splits, str(model_dir)))


def test_a_damaged_file_that_no_epoch_reads_is_named_before_training(tmp_path):
    """Each epoch drops the last partial batch of its shuffle: a truncated PNG there was
    never read, and a run over a damaged folder could pass."""
    from tf_autoencoder.data import pipeline, sources
    from tf_autoencoder.data.damage import check_never_read
    from tf_autoencoder.errors import DataError

    splits = sources.load_data(data_dir=image_folder(tmp_path / "data"))
    unread = pipeline.never_read(len(splits.train), 16, 5, range(1))
    assert len(unread) == len(splits.train) % 16  # the dropped rest of the one epoch
    seen = set()  # the images trained on (random ones: each is told by its pixels)
    for batch, _ in pipeline.make_training_epochs(splits.train.images, batch_size=16,
                                                  epochs=range(1), seed=5):
        seen.update(image.tobytes() for image in np.round(batch.numpy() * 255).astype(np.uint8))
    images = splits.train.images[:]
    assert [i for i in range(len(images)) if images[i].tobytes() not in seen] == unread.tolist()
    check_never_read(splits, 16, 5, range(1))  # all whole: nothing to say
    bad = splits.train.images.paths[unread[0]]
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)
    with pytest.raises(DataError, match=f"{re.escape(bad)} cannot be decoded"):
        check_never_read(splits, 16, 5, range(1))


def test_metrics_of_a_test_split_of_one_kind_are_absent_and_json_is_strict(tmp_path):
    """Every class normal: 16 lines of warnings, 'AUROC nan' and a bare NaN in
    evaluation.json, which strict parsers reject."""
    import warnings

    from tf_autoencoder.files import write_json_atomic
    from tf_autoencoder.run.anomaly import detection_metrics
    from tf_autoencoder.run.evaluation import format_table

    scores = np.linspace(0, 1, 12)
    labels = np.arange(12) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = detection_metrics(scores, labels, [0, 1, 2], threshold=0.5)
    assert metrics["auroc"] is None and metrics["auprc"] is None
    assert metrics["fpr_at_threshold"] == np.mean(scores > 0.5)
    assert metrics["tpr_at_threshold"] is None and metrics["anomalous_images"] == 0
    report = {"metrics": {"bce": 0.1, "mse": 0.01, "psnr": float("inf"), "ssim": 0.5},
              "inputs": "x", "data": "y", "test_images": 12, "probe_train_images": 3,
              "knn_neighbours": 5, "anomaly": {**metrics, "normal_classes": [0, 1, 2],
                                               "normal_class_names": ["0", "1", "2"]}}
    table = format_table(report)
    assert "nan" not in table.lower() and "AUROC, normal 0, 1, 2 vs the rest" in table
    write_json_atomic(str(tmp_path / "e.json"), {**report, "x": float("nan")})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    read = json.loads((tmp_path / "e.json").read_text(), parse_constant=refuse)
    assert read["x"] is None and read["metrics"]["psnr"] is None
    assert read["anomaly"]["auroc"] is None
    # config.json: --learning_rate inf passed the "> 0" check and was written as Infinity.
    from tf_autoencoder.config import Config, ConfigError

    for name in ("learning_rate", "noise_factor", "weight_decay"):
        with pytest.raises(ConfigError, match=f"{name} must be a finite number, got inf"):
            Config(**{name: float("inf")}).validate()


def test_the_smaller_words(tmp_path, capsys):
    """'1 images'; --image_size 1x1's 'give at most 0 sizes'; --max_pixels 1e9's
    'invalid literal for int()'; hidden files skipped but not counted; an empty class
    folder made a class without a word; a mixed-size folder's exit 1 (a usage error)."""
    from tf_autoencoder.cli import build_parser
    from tf_autoencoder.config import ConfigError, check_encoder_fits
    from tf_autoencoder.data import sources

    parser = build_parser()
    for command in (["train"], ["predict", "m", "x.png"]):
        assert parser.parse_args([*command, "--max_pixels", "1e9"]).max_pixels == 10**9
    with pytest.raises(ConfigError) as error:
        check_encoder_fits(1, 1, [16, 8, 8])
    assert "at most 0" not in str(error.value) and "--image_size 5x5" in str(error.value)
    check_encoder_fits(5, 5, [16, 8, 8])  # the size it names is enough
    with pytest.raises(ConfigError):
        check_encoder_fits(4, 4, [16, 8, 8])

    data = image_folder(tmp_path / "data")
    (tmp_path / "data" / "a" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "data" / "a" / "._00.png").write_bytes(b"\0")
    (tmp_path / "data" / "empty").mkdir()
    said = []
    splits = sources.load_data(data_dir=data, log=said.append)
    assert splits.class_names == ["a", "b", "empty"]
    assert any(line.startswith(f"Skipped 2 files in {data}") and "hidden" in line
               for line in said), said
    assert any(line.startswith("1 class folder without images: ") and "empty" in line
               for line in said), said

    for name in ("train", "test"):  # and beside split folders
        image_folder(tmp_path / "splits" / name, classes=("a", "b"), count=8)
    (tmp_path / "splits" / ".DS_Store").write_bytes(b"\0")
    said = []
    sources.load_data(data_dir=str(tmp_path / "splits"), log=said.append)
    assert any(line.startswith("Skipped 1 file in") for line in said), said

    image_folder(tmp_path / "data", classes=("a",), count=1, size=9)
    status, _, err = main_status(capsys, "train", "--data_dir", data, "--model_dir",
                                 str(tmp_path / "m"))
    assert status == 2 and "images differ in size" in err, err


def test_predict_says_one_score_and_makes_the_folder_of_its_csv(trained_run, tmp_path, capsys):
    """'Wrote 1 scores'; a --csv in a folder not yet made failed after every image was
    scored."""
    image = image_folder(tmp_path / "i", classes=None, count=1, size=28)
    csv_path = tmp_path / "new" / "s.csv"
    status, out, _ = main_status(capsys, "predict", trained_run[0], image, "--csv",
                                 str(csv_path))
    assert status == 0 and f"Wrote 1 score to {csv_path}" in out, out
    assert csv_path.read_text().splitlines()[1].startswith(os.path.join(image, "00.png"))


def test_a_resume_refusal_names_only_the_settings_that_differ(run, capsys):
    """It used to print both whole architecture dicts."""
    status, _, err = main_status(capsys, "train", "--model_dir", run, "--num_filters", "4,4",
                                 "--epochs", "2")
    assert status == 2, err
    assert "num_filters [16, 8, 8] (now [4, 4])" in err
    assert "kernel_size" not in err and "data_format" not in err


def test_a_refusal_for_another_anomaly_fpr_says_how_to_recalibrate(tmp_path):
    from tf_autoencoder.config import Config, ConfigError
    from tf_autoencoder.run.anomaly import check_same_calibration

    (tmp_path / "threshold.json").write_text(json.dumps(
        {"threshold": 0.1, "anomaly_fpr": 0.01, "anomaly_score": "reconstruction"}))
    with pytest.raises(ConfigError, match=r"set them in its config\.json, then run "
                                          r"`tf-autoencoder evaluate .*` and `tf-autoencoder "
                                          r"export"):
        check_same_calibration(str(tmp_path), Config(anomaly_fpr=0.05).validate())


def test_sigterm_outside_the_training_loop_is_one_line_and_143(run):
    """It used to end the command with status 143 and no word (Ctrl-C got one)."""
    import signal

    process = forked_commands.start(
        ["-m", "tf_autoencoder", "export", run], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "TF_AUTOENCODER_PAUSE_AT": "export"})
    for line in process.stderr:  # the pause point's line: the command is there now
        if line.startswith("paused at export"):
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 143, rest
    assert rest.count("\n") == 1 and rest.endswith("export: terminated (SIGTERM)\n"), rest
