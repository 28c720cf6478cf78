"""`tf-autoencoder predict`: reconstructions and scores for image files."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, error_lines, run_python
from tf_autoencoder.cli import main
from tf_autoencoder.data.sources import load_mnist_sample
from tf_autoencoder.serving.predict import output_names


def write_png(path, image):
    path.write_bytes(tf.io.encode_png(image).numpy())


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """A test digit as a greyscale PNG, as RGB, at 56x56, inverted; a text file; a missing file."""
    folder = tmp_path_factory.mktemp("images")
    digit = load_mnist_sample().test.images[0]  # (28, 28, 1) uint8
    write_png(folder / "digit.png", digit)
    write_png(folder / "rgb.png", np.repeat(digit, 3, axis=-1))
    write_png(folder / "big.png", np.repeat(np.repeat(digit, 2, axis=0), 2, axis=1))
    write_png(folder / "inverted.png", 255 - digit)
    (folder / "notes.txt").write_text("not an image")
    names = ["digit.png", "rgb.png", "big.png", "notes.txt", "inverted.png", "missing.png"]
    return folder, digit, [str(folder / name) for name in names]


@pytest.fixture(scope="module")
def predicted(trained_run, image_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run_python("-m", "tf_autoencoder", "predict", trained_run[0], *image_files[2],
                        "--output_dir", str(out))
    scores = {}
    for line in result.stdout.splitlines()[1:-2]:  # between the model's line and the counts
        path, score = re.match(r"(.+): score (\d\.\d{6}), (?:normal|anomalous) -> ", line).groups()
        scores[os.path.basename(path)] = float(score)
    return result, scores, out


def test_predict_reports_every_file_and_exits_1_for_the_bad_ones(predicted, trained_run):
    result, scores, out = predicted
    assert result.returncode == 1
    export = os.path.join(trained_run[0], "export", "1")
    assert result.stdout.splitlines()[0] == (f"Model: {export} (TensorFlow): greyscale images "
                                             "28 wide x 28 high")
    assert list(scores) == ["digit.png", "rgb.png", "big.png", "inverted.png"]
    errors = error_lines(result.stderr)
    assert len(errors) == 2, result.stderr
    assert "notes.txt: not an image" in errors[0] and "missing.png: No such file" in errors[1]
    lines = dict(zip(scores, result.stdout.splitlines()[1:]))
    assert lines["rgb.png"].endswith("(colour converted to greyscale)")
    assert lines["big.png"].endswith("(resized from 56 wide x 56 high to 28 wide x 28 high)")
    assert not lines["digit.png"].endswith(")")
    flagged = sum(", anomalous -> " in line for line in lines.values())
    assert result.stdout.splitlines()[-2] == f"{flagged} of 4 images anomalous (2 could not be read)"
    # The images scored, not the 6 files given: catches a count of the files.
    assert re.fullmatch(r"Scored 4 images in [\d.]+ s, [\d,]+ images/s",
                        result.stdout.splitlines()[-1]), result.stdout
    assert sorted(os.listdir(out)) == [f"{stem}_reconstruction.png"
                                       for stem in ["big", "digit", "inverted", "rgb"]]


def test_score_is_the_mse_of_the_written_reconstruction(predicted, trained_run, image_files):
    _, scores, out = predicted
    digit = image_files[1].astype(np.float32)[None] / 255
    serve = tf.saved_model.load(os.path.join(trained_run[0], "export", "1"))
    reconstruction = serve.signatures["serving_default"](images=digit)["reconstructions"].numpy()
    assert scores["digit.png"] == pytest.approx(np.mean((digit - reconstruction) ** 2), abs=2e-6)
    written = tf.io.decode_png((out / "digit_reconstruction.png").read_bytes()).numpy()
    assert written.shape == (28, 28, 1)
    assert np.abs(written.astype(np.float32) - reconstruction[0] * 255).max() <= 0.5 + 1e-3
    # The same digit in RGB scores the same; an inverted digit is an anomaly.
    assert scores["rgb.png"] == pytest.approx(scores["digit.png"], abs=1e-3)
    assert scores["inverted.png"] > 1.5 * scores["digit.png"]


def test_only_good_files_exit_0(trained_run, image_files, tmp_path, capsys):
    digit = str(image_files[0] / "digit.png")
    assert main(["predict", trained_run[0], digit, "--output_dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(f"{digit}: score ")


def test_model_dir_without_export_says_how_to_make_one(tmp_path, capsys):
    for name in ["config.json", "model.keras"]:
        (tmp_path / name).write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path), "digit.png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tf-autoencoder export" in err, err


def test_saved_model_without_our_signatures_is_one_line(tmp_path, image_files, capsys):
    module = tf.Module()
    module.double = tf.function(lambda x: {"y": 2 * x},
                                input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures=module.double)
    digit = str(image_files[0] / "digit.png")
    assert main(["predict", str(tmp_path / "other"), digit, "--output_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no serving_default signature" in err, err


def test_reconstructions_of_inputs_with_one_name_do_not_overwrite_each_other():
    assert output_names(["a/x.png", "b/x.png", "x.jpg", "y.png"]) == [
        "x_reconstruction.png", "x_reconstruction-2.png", "x_reconstruction-3.png",
        "y_reconstruction.png"]


# --- what predict says about sizes ------------------------------------------------------------

def test_predict_says_which_side_of_a_size_is_the_width(trained_run, image_files, tmp_path,
                                                        capsys):
    """An image 56 wide and 42 high: a bare "42x56" reads as width x height to most and
    says the opposite (NumPy's height x width order); the note names each side."""
    digit = image_files[1]
    wide = np.zeros((42, 56, 1), np.uint8)
    wide[7:35, 14:42] = digit
    write_png(tmp_path / "wide.png", wide)
    assert main(["predict", trained_run[0], str(tmp_path / "wide.png"),
                 "--output_dir", str(tmp_path / "out")]) == 0
    model, line, count, scored = capsys.readouterr().out.splitlines()
    assert model.endswith("(TensorFlow): greyscale images 28 wide x 28 high")
    assert line.endswith("(centre cropped to the model's aspect ratio and resized from 56 "
                         "wide x 42 high to 28 wide x 28 high)")
    assert count in ("0 of 1 image anomalous", "1 of 1 image anomalous")
    assert re.fullmatch(r"Scored 1 image in [\d.]+ s, [\d,]+ images/s", scored), scored


def test_predict_help_and_docs_say_what_an_anomaly_score_takes():
    """The score separates images as well as the model learnt the normal ones: a briefly
    trained model scored a photograph 0.087 against digits' 0.077 to 0.079. Calling it
    "a usable anomaly score" without the threshold and the training it takes fails."""
    from tf_autoencoder.cli import command_parser

    help_text = " ".join(command_parser("predict", "tf-autoencoder predict").format_help().split())
    with open(os.path.join(REPO, "docs", "export-and-serving.md")) as f:
        docs = " ".join(f.read().split())
    for text in (help_text, docs):
        assert "usable anomaly score" not in text
        assert "threshold" in text and "normal images" in text


def test_a_folder_is_scored_in_batches_into_a_csv(trained_run, image_files, predicted, tmp_path,
                                                  capsys, monkeypatch):
    """Folders are walked recursively, a batch at a time; the CSV holds the scores the
    per-file lines give. Catches a batch boundary that drops or repeats images, and PNGs
    written for a folder without --output_dir."""
    from tf_autoencoder.serving import predict

    source = image_files[0]
    folder = tmp_path / "in"
    (folder / "sub" / "deeper").mkdir(parents=True)
    for name, where in [("digit.png", "sub"), ("inverted.png", "sub"), ("notes.txt", "sub"),
                        ("rgb.png", "sub/deeper"), ("big.png", "")]:
        (folder / where / name).write_bytes((source / name).read_bytes())
    monkeypatch.setattr(predict, "BATCH", 2)
    monkeypatch.setattr(predict, "PROGRESS_EVERY", 2)
    monkeypatch.chdir(tmp_path)
    scores_csv = tmp_path / "scores.csv"
    assert main(["predict", trained_run[0], str(folder), "--csv", str(scores_csv)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["Skipped 1 file in the folders given: not images (by their "
                       "extension: .png, .jpg, .jpeg, .bmp, .gif)",
                       "Scored 2 of 4 images (0 failed)", "Scored 4 of 4 images (0 failed)",
                       f"Wrote 4 scores to {scores_csv}", out[-2], out[-1]]
    flagged = int(out[-2].split()[0])
    assert out[-2] == f"{flagged} of 4 images anomalous"
    assert re.fullmatch(r"Scored 4 images in [\d.]+ s, [\d,]+ images/s", out[-1]), out
    import csv

    with open(scores_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.relpath(row["path"], folder) for row in rows] == [
        "big.png", "sub/deeper/rgb.png", "sub/digit.png", "sub/inverted.png"]
    expected = predicted[1]
    for row in rows:
        assert float(row["score"]) == pytest.approx(expected[os.path.basename(row["path"])],
                                                    abs=2e-6)
    assert sum(row["verdict"] == "anomalous" for row in rows) == flagged
    # The notes that the per-file lines give stay in the CSV.
    notes = {os.path.basename(row["path"]): row["notes"] for row in rows}
    assert notes == {"big.png": "resized from 56 wide x 56 high to 28 wide x 28 high",
                     "rgb.png": "colour converted to greyscale", "digit.png": "",
                     "inverted.png": ""}
    assert not (tmp_path / "reconstructions").exists()


def test_a_folder_without_images_is_one_line(trained_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["predict", trained_run[0], str(tmp_path), "--csv", str(tmp_path / "s.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no image files to score in" in err, err
    assert not (tmp_path / "s.csv").exists()
