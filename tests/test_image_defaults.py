"""Settings chosen for a folder of images where the command line gave none: which choice
for which folder, printed in the run's first lines, recorded in run.json (config.json
keeps what was asked), overridden by a flag; and the warning of a run that would make
too few updates."""
import glob
import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import run_train
from tf_autoencoder import image_defaults
from tf_autoencoder.config import DEFAULTS


def test_a_few_hundred_colour_photographs_get_small_batches_enough_updates_and_photo_settings():
    """The issue's folder: 800 patches of 64x64 RGB. Catches the post's batch of 256 (3
    updates an epoch), an epoch count that does not reach UPDATES, or a decay that never
    lowers the rate over the run."""
    chosen, reasons = image_defaults.choose([64, 64, 3], 800, given={})
    steps = 800 // chosen["batch_size"]
    assert chosen["batch_size"] < DEFAULTS["batch_size"]
    assert steps * chosen["epochs"] >= image_defaults.UPDATES > steps * (chosen["epochs"] - 1)
    total = steps * chosen["epochs"]
    assert chosen["lr_decay_rate"] ** (total // chosen["lr_decay_steps"]) <= 1 / 100
    assert chosen["loss"] == "mse"
    assert chosen["num_filters"] != DEFAULTS["num_filters"]
    assert chosen["linear_path"] == "pca" and chosen["code_size"]
    assert len(reasons) == 6 and all(reasons)


def test_the_linear_path_is_chosen_for_a_photographs_flat_code_alone():
    """Given --linear_path none, the rest is still chosen; given no flat code (the
    post's filters alone) or the variational model, there is no linear path to add."""
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={"linear_path": "none"})
    assert "linear_path" not in chosen and chosen["code_size"]
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={"num_filters": [16, 8, 8]})
    assert "linear_path" not in chosen
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={"model": "variational"})
    assert "linear_path" not in chosen
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={"code_size": 32})
    assert chosen["linear_path"] == "pca"


def test_a_large_folder_of_small_grey_images_keeps_the_posts_batch_and_model():
    """20,000 digits of 28x28 grey in a folder: MNIST-like, so the post's batch, loss
    and filters; only the number of epochs and the schedule follow the updates."""
    chosen, _ = image_defaults.choose([28, 28, 1], 20_000, given={})
    assert chosen["batch_size"] == DEFAULTS["batch_size"]
    assert not {"loss", "num_filters", "downsample"} & set(chosen)
    assert chosen["epochs"] == math.ceil(image_defaults.UPDATES / (20_000 // 256))


def test_a_setting_the_command_line_gave_is_never_chosen():
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={
        "batch_size": 256, "loss": "bce", "num_filters": [16, 8, 8]})
    assert not {"batch_size", "loss", "num_filters", "downsample"} & set(chosen)
    assert chosen["epochs"] == min(math.ceil(image_defaults.UPDATES / (800 // 256)),
                                   image_defaults.MAX_EPOCHS)
    # Epochs given: the run's length is the user's, and so is the schedule (the post's).
    chosen, _ = image_defaults.choose([64, 64, 3], 800, given={"epochs": 3})
    assert not {"epochs", "lr_decay_steps", "lr_decay_rate"} & set(chosen)


def test_a_folder_of_a_few_dozen_images_gets_at_most_max_epochs():
    """40 images make one update an epoch: 4,000 one-update epochs would spend the run
    validating and saving checkpoints."""
    chosen, reasons = image_defaults.choose([64, 64, 3], 40, given={})
    assert chosen["epochs"] == image_defaults.MAX_EPOCHS
    assert f"at most {image_defaults.MAX_EPOCHS} epochs" in reasons[1]


def test_too_few_updates_are_said_with_the_epochs_that_would_do():
    """The README's command on the issue's folder: batch 256, 50 epochs, 800 images."""
    line = image_defaults.too_few_updates(256, 50, 800)
    epochs = int(re.search(r"give --epochs ([\d,]+) or more", line)[1].replace(",", ""))
    assert line.startswith("Warning: 50 epochs of 3 updates (batch 256 of 800 images) make "
                           "150 updates, too few to learn the images")
    assert 3 * epochs >= image_defaults.MIN_UPDATES > 3 * (epochs - 1)
    assert image_defaults.too_few_updates(256, epochs, 800) is None


def _folder(path, count, size=32):
    """`count` colour PNGs of size x size in a flat folder."""
    rng = np.random.default_rng(0)
    path.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(path / f"{i:03d}.png")
    return str(path)


def _steps(model_dir):
    """The optimizer steps of the run's newest checkpoint (ckpt-<step>)."""
    return max(int(re.search(r"ckpt-(\d+)\.index$", path)[1])
               for path in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("images") / "data", 80, size=16)


def test_a_folders_run_prints_records_and_trains_with_the_chosen_settings(folder, tmp_path):
    """One epoch (given) on 80 colour images of 16x16: the batch, schedule, loss and
    filters are chosen, printed right after the Data line, recorded in run.json, and
    trained with (the checkpoint's step count is the chosen batch's); config.json keeps
    the defaults as asked. Catches a choice that is printed but not used, or written
    into config.json."""
    model_dir = str(tmp_path / "run")
    result = run_train("--data_dir", folder, "--epochs", "1", "--embedding_images", "0",
                       "--seed", "1", "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(model_dir, "run.json")) as f:
        facts = json.load(f)
    with open(os.path.join(model_dir, "config.json")) as f:
        asked = json.load(f)
    train = facts["split_sizes"]["train"]
    expected, because = image_defaults.choose([16, 16, 3], train, given={"epochs": 1})
    assert facts["chosen"] == expected and facts["chosen_because"] == because
    lines = result.stdout.splitlines()
    data = next(i for i, line in enumerate(lines) if line.startswith("Data: "))
    assert lines[data + 1] == image_defaults.describe(expected, because, [16, 16, 3], train)
    assert f"--batch_size {expected['batch_size']} " in lines[data + 1]
    assert lines[data + 2].startswith(f"Warning: 1 epochs of {train // expected['batch_size']} "
                                      "updates")
    assert _steps(model_dir) == train // expected["batch_size"]
    assert asked["batch_size"] == DEFAULTS["batch_size"] and asked["loss"] == DEFAULTS["loss"]
    assert facts["architecture"]["num_filters"] == expected["num_filters"]
    # The linear path is chosen, started at PCA, and the run exports its model.
    assert facts["architecture"]["linear_path"] == "pca"
    assert any(line.startswith("The linear path starts at PCA with "
                               f"{expected['code_size']} components") for line in lines)
    assert os.path.isfile(os.path.join(model_dir, "export", "1", "saved_model.pb"))


def test_a_flag_overrides_its_chosen_setting(folder, tmp_path):
    """--batch_size 8 and --num_filters given: run.json chooses neither, and the run
    trains at batch 8 with the post's filters."""
    model_dir = str(tmp_path / "run")
    result = run_train("--data_dir", folder, "--epochs", "1", "--batch_size", "8",
                       "--num_filters", "16,8,8", "--embedding_images", "0", "--seed", "1",
                       "--model_dir", model_dir)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(model_dir, "run.json")) as f:
        facts = json.load(f)
    assert not {"batch_size", "num_filters", "downsample", "epochs"} & set(facts["chosen"])
    assert facts["architecture"]["num_filters"] == [16, 8, 8]
    assert _steps(model_dir) == facts["split_sizes"]["train"] // 8
