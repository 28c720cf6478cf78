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


# --- anomaly maps and tiles -------------------------------------------------------------------

def camera_jpeg(path, height=70, width=100):
    """A crop of scikit-image's camera man, a greyscale JPEG larger than the model's 28x28."""
    from skimage import data

    image = data.camera()[150:150 + height, 180:180 + width, None]
    path.write_bytes(tf.io.encode_jpeg(image, quality=95).numpy())
    return path


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return {os.path.basename(row["path"]): row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def mapped(trained_run, tmp_path_factory):
    """predict --maps --csv on a JPEG of 100 wide x 70 high, with and without --tiles."""
    folder = tmp_path_factory.mktemp("mapped")
    photo = str(camera_jpeg(folder / "camera.jpg"))
    rows = {}
    for how, extra in [("resized", []), ("tiled", ["--tiles"])]:
        assert main(["predict", trained_run[0], photo, "--no_reconstructions", "--maps",
                     str(folder / how), "--csv", str(folder / f"{how}.csv"), *extra]) == 0
        rows[how] = read_csv(folder / f"{how}.csv")["camera.jpg"]
    serve = tf.saved_model.load(os.path.join(trained_run[0], "export", "1")).signatures
    return folder, photo, rows, serve


def test_the_csv_locates_the_strongest_point_of_a_resized_images_map_in_its_own_pixels(mapped):
    """The export's map of the file (score_bytes: the same preparation) has its maximum at
    one model pixel; the CSV gives the input pixel there: the 70 x 70 centre crop starts
    at column 15 and is 2.5 input pixels per model pixel. Catches a location in the
    model's pixels, rows and columns swapped, and the crop's offset forgotten."""
    folder, photo, rows, serve = mapped
    row = rows["resized"]
    outputs = serve["score_bytes"](image_bytes=tf.constant([open(photo, "rb").read()]))
    the_map = outputs["anomaly_maps"].numpy()[0]
    r, c = np.unravel_index(np.argmax(the_map), the_map.shape)
    assert (int(row["map_row"]), int(row["map_column"])) == (int((r + 0.5) * 2.5),
                                                             15 + int((c + 0.5) * 2.5))
    assert float(row["map_max"]) == pytest.approx(the_map.max(), abs=2e-6)
    assert float(row["score"]) == pytest.approx(float(outputs["scores"][0]), abs=2e-6)


def test_tiles_score_the_highest_tile_and_stitch_the_map_at_the_images_size(mapped):
    """The tiles a test cuts itself (every 14 pixels, the last flush with the edge) from
    the decoded JPEG, scored by the SavedModel's score signature: the image's score is
    the highest tile's, its map the tiles' maps averaged, and the CSV's location is that
    map's maximum in the input's pixels. Catches a mean of the tiles' scores, a map left
    at the model's size, and a resized image scored as tiles."""
    folder, photo, rows, serve = mapped
    pixels = tf.io.decode_jpeg(open(photo, "rb").read(), channels=1,
                               dct_method="INTEGER_ACCURATE").numpy().astype(np.float32) / 255
    assert pixels.shape == (70, 100, 1)
    corners = [(top, left) for top in [0, 14, 28, 42] for left in [0, 14, 28, 42, 56, 70, 72]]
    cut = np.stack([pixels[t:t + 28, l:l + 28] for t, l in corners])
    outputs = serve["score"](images=tf.constant(cut))
    total, count = np.zeros((70, 100)), np.zeros((70, 100))
    for (t, l), tile_map in zip(corners, outputs["anomaly_maps"].numpy()):
        total[t:t + 28, l:l + 28] += tile_map
        count[t:t + 28, l:l + 28] += 1
    stitched = total / count
    row = rows["tiled"]
    assert float(row["score"]) == pytest.approx(float(outputs["scores"].numpy().max()), abs=2e-6)
    assert float(outputs["scores"].numpy().mean()) < float(row["score"])
    assert row["notes"] == "scored in 28 tiles of 28 wide x 28 high"
    r, c = np.unravel_index(np.argmax(stitched), stitched.shape)
    assert (int(row["map_row"]), int(row["map_column"])) == (r, c)
    assert float(row["map_max"]) == pytest.approx(stitched.max(), abs=2e-6)
    assert rows["resized"]["notes"].startswith("centre cropped")


def test_each_map_picture_is_a_png_of_three_panels(mapped):
    """By content: a PNG that decodes, three panels wide, and more than a flat colour."""
    folder = mapped[0]
    for how in ("resized", "tiled"):
        assert os.listdir(folder / how) == ["camera_map.png"]
        picture = tf.io.decode_png((folder / how / "camera_map.png").read_bytes()).numpy()
        assert picture.shape[1] > 2.5 * picture.shape[0]
        assert picture[..., :3].std() > 20


def test_a_map_picture_that_would_overwrite_an_input_is_refused_before_scoring(
        trained_run, image_files, tmp_path, capsys):
    (tmp_path / "digit_map.png").write_bytes((image_files[0] / "digit.png").read_bytes())
    (tmp_path / "digit.png").write_bytes((image_files[0] / "digit.png").read_bytes())
    status = main(["predict", trained_run[0], str(tmp_path), "--maps", str(tmp_path)])
    err = capsys.readouterr().err
    assert status != 0 and err.count("\n") == 1, err
    assert f"the map picture {tmp_path / 'digit_map.png'} would overwrite" in err
    assert "give another --maps" in err
    assert sorted(os.listdir(tmp_path)) == ["digit.png", "digit_map.png"]
