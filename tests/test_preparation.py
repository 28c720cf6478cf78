"""One preparation (tf_autoencoder/preparation.py): every mode and format a folder may hold
gets the pixels Pillow shows for it, and the same pixels, score and verdict wherever it is
read: the training pipeline (which calibration and evaluate score), predict with each
export format, and the SavedModel's image-bytes signature."""
import csv
import json
import re
import io
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from conftest import run_python, run_train
from tf_autoencoder.cli import main
from tf_autoencoder.config import Config
from tf_autoencoder.data.folder import FileImages, read_headers
from tf_autoencoder.images import image_header
from tf_autoencoder.model.models import build_autoencoder
from tf_autoencoder.preparation import (prepare_image, prepare_plain, prepare_simple,
                                         prepare_unresized, to_input_pixel)
from tf_autoencoder.run.anomaly import reconstruction_scores
from tf_autoencoder.serving.export import export_saved_model


def _smooth(rng, height, width):
    """An RGB picture with structure (a gradient and blobs), not only noise: resizing it
    means something, and a model's scores spread."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([x, y, 1 - x * y], -1) * 200
    return np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)


def _bmp(pixels_rgb, bits, top_down=False, colours=16):
    """A palette BMP of 1, 4 or 8 bits a pixel, written byte by byte (Pillow writes no 4-bit
    or top-down BMP): BITMAPFILEHEADER, BITMAPINFOHEADER, colour table, padded rows."""
    height, width = pixels_rgb.shape[:2]
    if bits == 1:  # black and white, dithered as Pillow's "1" mode
        index = np.asarray(Image.fromarray(pixels_rgb).convert("1")).astype(np.uint8)
        palette = np.array([[0, 0, 0], [255, 255, 255]])
    else:
        palette_image = Image.fromarray(pixels_rgb).convert(
            "P", palette=Image.ADAPTIVE, colors=min(colours, 2 ** bits))
        index = np.asarray(palette_image)
        palette = np.array(palette_image.getpalette()[:3 * 2 ** bits]).reshape(-1, 3)
    stride = (width * bits + 31) // 32 * 4
    rows = bytearray()
    for r in range(height):
        row = bytearray(stride)
        for c in range(width):
            bit = c * bits
            row[bit // 8] |= int(index[r, c]) << (8 - bits - bit % 8)
        rows += row
    if not top_down:  # bottom-up, as most BMPs: the last row first
        rows = b"".join(bytes(rows[i * stride:(i + 1) * stride]) for i in reversed(range(height)))
    table = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    offset = 14 + 40 + len(table)
    header = b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + struct.pack(
        "<IiiHHIIiiII", 40, width, -height if top_down else height, 1, bits, 0, len(rows),
        2835, 2835, len(palette), 0)
    return header + table + bytes(rows)


def _bmp32(pixels_rgb):
    """A standard 32-bit BMP (BI_RGB): BGRX, the fourth byte unused and 0."""
    height, width = pixels_rgb.shape[:2]
    bgrx = np.dstack([pixels_rgb[..., ::-1], np.zeros((height, width, 1), np.uint8)])
    rows = bgrx[::-1].tobytes()
    return b"BM" + struct.pack("<IHHI", 54 + len(rows), 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 32, 0, len(rows), 2835, 2835, 0, 0) + rows


def _jpeg_with_big_endian_orientation(pixels_rgb, orientation):
    """A JPEG whose EXIF block is big-endian ('MM'), as some cameras write it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels_rgb).save(buffer, "JPEG", quality=95)
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0")
    segment = b"Exif\0\0" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment
    data = buffer.getvalue()
    return data[:2] + app1 + data[2:]


@pytest.fixture(scope="module")
def every_mode(tmp_path_factory):
    """A folder of every mode and format the docs list, at several sizes and aspect ratios."""
    folder = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(0)

    def picture(height, width):
        return _smooth(rng, height, width)

    def save(name, image, **options):
        image.save(folder / name, **options)

    rgb = picture(20, 30)
    save("grey.png", Image.fromarray(picture(24, 24)).convert("L"))
    grey_alpha = Image.fromarray(picture(18, 32)).convert("LA")
    grey_alpha.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 32), (18, 1)).astype(np.uint8)))
    save("grey_alpha.png", grey_alpha)
    save("palette.png", Image.fromarray(picture(30, 20)).convert("P", palette=Image.ADAPTIVE,
                                                                 colors=16))
    save("palette_transparent.png", Image.fromarray(rgb).convert(
        "P", palette=Image.ADAPTIVE, colors=16), transparency=3)
    save("one_bit.png", Image.fromarray(picture(16, 40)).convert("1"))
    deep = (picture(22, 22)[..., 0].astype(np.uint16) * 257 + rng.integers(0, 257, (22, 22))
            ).astype(np.uint16)
    save("sixteen_bit.png", Image.fromarray(deep))
    save("rgb.png", Image.fromarray(picture(32, 16)))
    # RGBA whose right half is transparent white: training and predict once saw white and
    # black there.
    rgba = np.dstack([picture(16, 32), np.full((16, 32), 255, np.uint8)])
    rgba[:, 16:] = [255, 255, 255, 0]
    rgba[4:12, 20:28, 3] = 128  # and a half-transparent square inside it
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("cmyk.jpg", Image.fromarray(picture(24, 36)).convert("CMYK"), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored on its side, turned by the viewer
    save("portrait.jpg", Image.fromarray(picture(20, 30)), exif=exif, quality=95)
    (folder / "portrait_mm.jpg").write_bytes(_jpeg_with_big_endian_orientation(picture(20, 30), 8))
    (folder / "bgrx.bmp").write_bytes(_bmp32(picture(20, 30)))
    (folder / "palette8.bmp").write_bytes(_bmp(picture(20, 30), 8, colours=64))
    (folder / "palette4_top_down.bmp").write_bytes(_bmp(picture(13, 17), 4, top_down=True))
    (folder / "one_bit.bmp").write_bytes(_bmp(picture(16, 24), 1))
    frames = [Image.fromarray(picture(24, 24)).convert("P", palette=Image.ADAPTIVE)
              for _ in range(2)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    save("transparent.gif", Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=8),
         transparency=0)
    return folder, sorted(str(path) for path in folder.iterdir())


def pillow_shows(path):
    """What Pillow shows for the file, as float RGB in 0..255: turned upright, 16 bits
    scaled to 8, transparent areas composited onto white."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode.startswith("I;16"):
        grey = np.asarray(image).astype(np.float64) / 257
        return np.repeat(grey[..., None], 3, -1)
    rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:] / 255
    return rgba[..., :3] * alpha + 255 * (1 - alpha)


def prepared(path, shape):
    return prepare_image(tf.constant(open(path, "rb").read()), shape).numpy()


def test_each_pixel_is_what_pillow_shows(every_mode):
    """Catches palette BMPs read as their indices, a 1-bit BMP refused, a 32-bit BMP's
    unused byte taken for alpha (an all-black image), 16-bit samples truncated, EXIF
    orientation ignored, transparency onto black, and TensorFlow's fast JPEG DCT."""
    for path in every_mode[1]:
        want = pillow_shows(path)
        header = image_header(path)
        assert (header.height, header.width) == want.shape[:2], path
        got = prepared(path, (*want.shape[:2], 3))
        np.testing.assert_allclose(got, want, atol=0.5 + 1e-6, rtol=0, err_msg=path)
        # Grey files (the header's count) come out grey: no colour that training then drops.
        if header.channels == 1:
            assert (np.ptp(want, axis=-1) < 1e-9).all(), path
            grey = prepared(path, (*want.shape[:2], 1))[..., 0]
            np.testing.assert_allclose(grey, want[..., 0], atol=0.5 + 1e-6, err_msg=path)


def test_the_unresized_preparation_is_the_full_one_at_the_images_own_size(every_mode):
    """prepare_unresized (for tiles) decodes, turns, composites and converts each mode as
    prepare_image does, at the image's upright size: a portrait JPEG comes out 20 wide x
    30 high. Catches a second decoder that forgets one of those steps."""
    for path in every_mode[1]:
        header = image_header(path)
        data = tf.constant(open(path, "rb").read())
        for channels in (1, 3):
            got = prepare_unresized(data, channels).numpy()
            assert got.shape == (header.height, header.width, channels), path
            np.testing.assert_array_equal(
                got, prepare_image(data, (header.height, header.width, channels)).numpy(),
                err_msg=path)


def test_an_input_pixel_is_found_through_the_crop_and_resize():
    """A 100 wide x 70 high image for a 28x28 model: its 70x70 centre starts at column
    15, 2.5 input pixels per model pixel; a 28x28 one is not resized."""
    assert to_input_pixel(0, 0, (70, 100), (28, 28, 1)) == (1, 16)
    assert to_input_pixel(27, 27, (70, 100), (28, 28, 1)) == (68, 83)
    assert to_input_pixel(27, 0, (100, 70), (28, 28, 1)) == (83, 1)  # taller: rows cropped
    assert to_input_pixel(5, 9, (28, 28), (28, 28, 1)) == (5, 9)


def test_the_fast_path_gives_the_pixels_of_the_full_preparation(every_mode):
    plain = [path for path in every_mode[1] if image_header(path).simple]
    assert {os.path.basename(path) for path in plain} == {"grey.png", "rgb.png"}
    jpeg = every_mode[0] / "plain.jpg"
    Image.fromarray(_smooth(np.random.default_rng(3), 12, 20)).save(jpeg, quality=90)
    for path in plain + [str(jpeg)]:
        header = image_header(path)
        shape = (header.height, header.width, header.channels)
        data = tf.constant(open(path, "rb").read())
        np.testing.assert_array_equal(prepare_plain(data, shape).numpy(),
                                      prepare_image(data, shape).numpy(), err_msg=path)
        # At other sizes and channels, the simple path's (crop, resize, grey or RGB).
        for other in [(7, 9, 1), (16, 16, 3), (40, 12, 3), (header.height, header.width, 3)]:
            np.testing.assert_array_equal(prepare_simple(data, other).numpy(),
                                          prepare_image(data, other).numpy(), err_msg=path)
    jpeg.unlink()


def test_headers_give_the_size_and_channels_the_preparation_gives(every_mode):
    headers, bad = read_headers(every_mode[1])
    assert bad == []
    for path, (height, width, channels, _) in zip(every_mode[1], headers):
        assert (height, width) == pillow_shows(path).shape[:2], path
        assert channels == (1 if Image.open(path).mode in ("1", "L", "LA", "I;16") else 3), path


def test_a_format_the_preparation_does_not_read_is_one_line_before_decoding(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.tif")
    (tmp_path / "x.png").write_bytes((tmp_path / "x.tif").read_bytes())  # a TIFF named .png
    with pytest.raises(ValueError, match="a TIFF image: PNG, JPEG, GIF or BMP expected"):
        image_header(str(tmp_path / "x.png"))
    rle = bytearray(_bmp(np.zeros((4, 4, 3), np.uint8), 8))
    rle[30:34] = struct.pack("<I", 1)  # BI_RLE8
    (tmp_path / "rle.bmp").write_bytes(bytes(rle))
    with pytest.raises(ValueError, match="compressed or 16-bit BMP"):
        image_header(str(tmp_path / "rle.bmp"))


@pytest.fixture(scope="module")
def parity(every_mode, tmp_path_factory):
    """A model for 16x16 RGB images (random weights: parity needs no training), exported
    with TFLite and ONNX, its threshold between two middle scores; each file scored by
    the training pipeline as calibration and evaluate score it, by predict with each
    format, and by the SavedModel's score_bytes signature."""
    folder, paths = every_mode
    config = Config(image_shape=[16, 16, 3], num_filters=[8, 4], precision="float32").validate()
    model = build_autoencoder(config)
    pixels = FileImages(paths, (16, 16, 3))[:]  # what training, calibrate and evaluate read
    pipeline = reconstruction_scores(model, pixels, config.data_format)
    ranked = np.sort(pipeline)
    middle = len(ranked) // 2
    threshold = float(ranked[middle - 1:middle + 1].mean())
    base = str(tmp_path_factory.mktemp("export") / "export")
    version = export_saved_model(model, config, base, ("tflite", "onnx"), threshold)
    predicted = {}
    for name, model_path in [("SavedModel", version),
                             ("TFLite", os.path.join(version, "model.tflite")),
                             ("ONNX", os.path.join(version, "serving_default.onnx"))]:
        out = tmp_path_factory.mktemp("csv") / "scores.csv"
        assert main(["predict", model_path, str(folder), "--csv", str(out)]) == 0
        with open(out, newline="") as f:
            predicted[name] = {row["path"]: row for row in csv.DictReader(f)}
    served = tf.saved_model.load(version).signatures["score_bytes"](
        image_bytes=tf.constant([open(path, "rb").read() for path in paths]))
    return paths, pixels, pipeline, threshold, predicted, served, version


def test_every_path_gives_each_file_the_same_score_and_verdict(parity):
    """Catches predict stretching where training crops (a wide image scored 0.103 by the
    run and 0.176 by predict), or reading alpha, BMPs or 16-bit PNGs its own way."""
    paths, _, pipeline, threshold, predicted, served, _ = parity
    clear = np.abs(pipeline - threshold) > 1e-5
    assert clear.sum() >= len(paths) - 1 and 0 < (pipeline > threshold).sum() < len(paths)
    for name, rows in predicted.items():
        assert sorted(rows) == paths, name
        scores = np.array([float(rows[path]["score"]) for path in paths])
        np.testing.assert_allclose(scores, pipeline, atol=2e-6, rtol=1e-5, err_msg=name)
        verdicts = np.array([rows[path]["verdict"] == "anomalous" for path in paths])
        np.testing.assert_array_equal(verdicts[clear], (pipeline > threshold)[clear], err_msg=name)
    np.testing.assert_allclose(served["scores"].numpy(), pipeline, atol=2e-6, rtol=1e-5)
    np.testing.assert_array_equal(served["is_anomalous"].numpy()[clear],
                                  (pipeline > threshold)[clear])


def test_the_bytes_signatures_reconstruct_and_encode_what_the_tensor_ones_do(parity):
    paths, pixels, *_, version = parity
    signatures = tf.saved_model.load(version).signatures
    data = tf.constant([open(path, "rb").read() for path in paths])
    images = tf.constant(pixels.astype(np.float32) / 255)
    np.testing.assert_allclose(
        signatures["reconstruct_bytes"](image_bytes=data)["reconstructions"].numpy(),
        signatures["serving_default"](images=images)["reconstructions"].numpy(), atol=1e-6)
    np.testing.assert_allclose(signatures["encode_bytes"](image_bytes=data)["codes"].numpy(),
                               signatures["encode"](images=images)["codes"].numpy(), atol=1e-5)
    np.testing.assert_allclose(signatures["score_bytes"](image_bytes=data)["anomaly_maps"].numpy(),
                               signatures["score"](images=images)["anomaly_maps"].numpy(),
                               atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        signatures["score_bytes"](image_bytes=tf.constant([b"not an image"]))
    # A header that claims 40,000 x 40,000 pixels is refused before anything is decoded.
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buffer, "PNG")
    bomb = bytearray(buffer.getvalue())
    bomb[16:24] = struct.pack(">II", 40_000, 40_000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 100,000,000 pixels"):
        signatures["score_bytes"](image_bytes=tf.constant([bytes(bomb)]))


# --- classes called by their names ---------------------------------------------------------

def test_classes_are_called_by_their_folder_names_everywhere(tmp_path):
    """Folders 1, 2 and 10 sort as labels 0="1", 1="10", 2="2": `--normal_classes 1` once
    trained on folder 10 without a word. A name is the folder it names; training says
    which classes are normal; errors and evaluate name them; evaluate refuses a folder
    whose classes changed since training."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for name, level in [("1", 40), ("2", 120), ("10", 220)]:
        (data / name).mkdir(parents=True)
        for i in range(60):
            pixels = np.clip(rng.normal(level, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{i:02d}.png")
    args = ["--data_dir", str(data), "--epochs", "1", "--batch_size", "16", "--num_filters",
            "4", "--embedding_images", "0", "--anomaly_fpr", "0.2"]
    model_dir = str(tmp_path / "run")
    trained = run_train(*args, "--normal_classes", "1", "--model_dir", model_dir)
    assert trained.returncode == 0, trained.stderr
    assert ("Normal classes: 1 (0) (training and validation keep only these; the test split "
            "keeps every class, scored as normal or anomalous)") in trained.stdout
    with open(os.path.join(model_dir, "run.json")) as f:
        facts = json.load(f)
    assert facts["normal_classes"] == [0] and facts["class_names"] == ["1", "10", "2"]
    # Every training image is one of folder 1's (dark); folder 10's are bright.
    assert facts["split_sizes"]["train"] + facts["split_sizes"]["validation"] < 60
    wrong = run_train(*args, "--normal_classes", "china", "--model_dir", str(tmp_path / "no"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].endswith(
        "--normal_classes china: image files in " + str(data) + " (3 classes: 1, 10, 2) has no "
        "class of that name (its classes are 1 (0), 10 (1), 2 (2))")
    evaluated = run_python("-m", "tf_autoencoder", "evaluate", model_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    assert re.search(r"AUROC, normal 1 vs the rest +\d\.\d{4}", evaluated.stdout)
    assert re.search(r"AUROC of class 10 alone +\d\.\d{4}", evaluated.stdout)
    assert re.search(r"AUROC of class 2 alone +\d\.\d{4}", evaluated.stdout)
    for name in ("threshold.json", "evaluation.json", "anomaly.png", "anomaly_extremes.png"):
        assert f"Wrote {os.path.join(model_dir, name)}" in evaluated.stdout
    with open(os.path.join(model_dir, "evaluation.json")) as f:
        anomaly = json.load(f)["anomaly"]
    assert anomaly["normal_class_names"] == ["1"]
    assert sorted(anomaly["auroc_per_anomalous_class"]) == ["10", "2"]
    (data / "0").mkdir()  # a class added since training: label numbers would shift
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "0" / "x.png")
    refused = run_python("-m", "tf_autoencoder", "evaluate", model_dir)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "does not hold the classes the run in " + model_dir + " trained on (1, 10, 2): restore "
        "its class folders as they were, or train a new run on these")
