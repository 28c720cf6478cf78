"""Reconstruct image files with an exported model (a SavedModel, a .tflite or an .onnx
file, each in its own runtime) and score each one.

The score is the one the export's score signature computes for the image as the model
sees it, prepared as training prepared it (preparation.prepare_image): its
reconstruction error (the mean squared error per pixel against its reconstruction), or
for a run trained with --anomaly_score code the distance of its code to the normal
images' codes. Images unlike the training data score higher, so a high score flags an
anomaly: each line says "anomalous" when the score is above the threshold the export
carries, else "normal". An export without a score signature gets the reconstruction
error and no verdict.

`tf-autoencoder predict MODEL img1.png folder/ ... [--csv scores.csv] [--output_dir DIR]`

Folders are walked recursively for image files. Images are read, reconstructed and
scored a batch at a time (BATCH images), so memory stays bounded however many there are.
"""
import functools
import os
import re
import time

import numpy as np
import tensorflow as tf

from ..data.folder import IMAGE_EXTENSIONS, walk
from ..errors import ConfigError, DataError, ModelError
from ..files import check_writable, write_text_atomic
from ..images import LIBJPEG_NOTE, MAX_PIXELS, check_pixels, describe_size, write_png
from ..logs import stderr_without
from ..pause import pause_point
from ..preparation import describe_preparation, prepare_image, to_model_input
from ..words import images_per_second, plural
from .loading import load_exported


def read_image(path: str, shape: tuple[int, int, int],
               max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Reads a PNG, JPEG, GIF or BMP file as the model expects it, by the preparation
    that training used (preparation.prepare_image).

    shape: the model's (H, W, C). Returns float32 (H, W, C) in [0, 1] and notes on what
    was changed to fit. Raises OSError if unreadable, ValueError if not an image or one
    of more than `max_pixels` pixels (told by its header, before decoding).
    """
    header = check_pixels(path, max_pixels)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with stderr_without(LIBJPEG_NOTE):  # our line says it, with the file's name
            pixels = _preparation(tuple(shape))(tf.constant(data))
    except tf.errors.InvalidArgumentError as e:
        if "Unknown image file format" in e.message:
            raise ValueError("not an image (PNG, JPEG, GIF or BMP expected)") from None
        detail = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]|\n.*", "", e.message,
                        flags=re.S).strip()  # TF's op context and graph trace
        raise ValueError(f"damaged image ({detail})") from None
    return to_model_input(pixels).numpy(), describe_preparation(header, shape)


@functools.lru_cache(maxsize=None)
def _preparation(shape: tuple[int, int, int]):
    """prepare_image for one model's shape, traced once (a graph, as in tf.data)."""
    return tf.function(lambda data: prepare_image(data, shape),
                       input_signature=[tf.TensorSpec([], tf.string)])


def describe_images(shape: tuple[int, int, int]) -> str:
    """'greyscale images 28 wide x 28 high' for the model's (H, W, C)."""
    height, width, channels = shape
    colour = {1: "greyscale", 3: "RGB"}.get(channels, f"{channels}-channel")
    return f"{colour} images {describe_size(height, width)}"


def output_names(paths: list[str]) -> list[str]:
    """<stem>_reconstruction.png per input; inputs that share a stem get -2, -3, ..."""
    used, names = set(), []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_reconstruction.png", 1
        while name in used:
            n += 1
            name = f"{stem}_reconstruction-{n}.png"
        used.add(name)
        names.append(name)
    return names


# Images read, reconstructed and scored at once: bounds the memory a run of any size takes.
BATCH = 256
# A line saying how far a run has got, every this many images (runs of more images).
PROGRESS_EVERY = 10_000
CSV_COLUMNS = ("path", "score")


def expand_inputs(paths: list[str], log=print) -> tuple[list[str], bool]:
    """The files to score: each file as given, and the image files under each folder
    (recursively, sorted; other files there are counted in one line). Also whether any
    folder was given. DataError for a symlink loop in a folder."""
    files, skipped, folders = [], 0, False
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        folders = True
        for found in walk(path, set()):
            if found.lower().endswith(IMAGE_EXTENSIONS):
                files.append(found)
            else:
                skipped += 1
    if skipped:
        log(f"Skipped {plural(skipped, 'file')} in the folders given: not images (by their "
            f"extension: {', '.join(IMAGE_EXTENSIONS)})")
    return files, folders


def check_inputs_kept(inputs: list[str], outputs: list[str]) -> None:
    """ConfigError, before any image is scored, if a reconstruction would be written over
    one of the images read (a folder holding earlier reconstructions given as both)."""
    read = {os.path.realpath(path): path for path in inputs}
    for output in outputs:
        if os.path.realpath(output) in read:
            raise ConfigError(f"the reconstruction {output} would overwrite "
                              f"{read[os.path.realpath(output)]}, one of the images to score: "
                              "give another --output_dir")


def write_scores_csv(path: str, rows: list[dict]) -> None:
    """One row per scored image, columns CSV_COLUMNS (more may be added: a row's keys
    beyond them follow in order), written whole or not at all."""
    import csv
    import io

    columns = list(CSV_COLUMNS) + [k for k in (rows[0] if rows else {}) if k not in CSV_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # Checked writable before scoring: its folder, or the nearest one above that exists.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, buffer.getvalue())


def predict_files(model_path: str, paths: list[str], output_dir: str | None, *, log=print,
                  error=print, max_pixels: int = MAX_PIXELS, csv_path: str | None = None) -> int:
    """Scores each image file (and each under a folder of `paths`), BATCH at a time; with
    `output_dir`, writes each one's reconstruction there; with `csv_path`, one CSV row
    per image (path, score, verdict, notes: what the preparation changed) at the end.
    Without a CSV each image gets a line; with one, a line every PROGRESS_EVERY images;
    an export with verdicts then says how many were anomalous, and the last line how many
    images were scored and how fast. Files that fail get one line through `error` and
    the rest go on. `model_path`: a SavedModel folder, a .tflite or an .onnx file.
    Returns the number of files that failed. Raises loading.ModelError for an unusable
    model, formats.MissingExtra when its runtime is not installed."""
    model = load_exported(model_path)
    shape = model.image_shape
    log(f"Model: {model_path} ({model.runtime}): {describe_images(shape)}")
    files, _ = expand_inputs(paths, log)
    if not files:
        raise DataError(f"no image files to score in {', '.join(paths)} (images end in "
                        f"{', '.join(IMAGE_EXTENSIONS)})")
    names = output_names(files) if output_dir is not None else [None] * len(files)
    if output_dir is not None:
        check_inputs_kept(files, [os.path.join(output_dir, name) for name in names])
        # A PNG is at most about its pixels' bytes, and a CSV row its path and a score.
        check_writable("--output_dir", output_dir, len(files) * (int(np.prod(shape)) + 1024))
    if csv_path is not None:
        check_writable("--csv", csv_path, sum(len(path) + 32 for path in files))
    rows, failed, verdicts_said = [], 0, False
    pause_point("predict")
    started = time.perf_counter()
    for start in range(0, len(files), BATCH):
        images, done = [], []
        for path, name in zip(files[start:start + BATCH], names[start:start + BATCH]):
            try:
                image, notes = read_image(path, shape, max_pixels)
            except OSError as e:
                error(f"{path}: {e.strerror or e}")
                failed += 1
                continue
            except ValueError as e:
                error(f"{path}: {e}")
                failed += 1
                continue
            images.append(image)
            done.append((path, name, notes))
        if images:
            images = np.stack(images)
            reconstructions = model.reconstruct(images)
            try:
                scores, flagged, maps = model.score(images)
                verdicts = ["anomalous" if one else "normal" for one in flagged]
            except ModelError as e:  # an export from before the score signature: no verdict
                if not verdicts_said:
                    log(f"No verdicts: {e}")
                    verdicts_said = True
                scores = np.mean(np.square(images - reconstructions), axis=(1, 2, 3))
                verdicts = [None] * len(images)
            for (path, name, notes), reconstruction, score, verdict in zip(
                    done, reconstructions, scores, verdicts):
                rows.append({"path": path, "score": f"{score:.6f}", "verdict": verdict or "",
                             "notes": "; ".join(notes)})
                line = f"{path}: score {score:.6f}" + (f", {verdict}" if verdict else "")
                if name is not None:
                    out = os.path.join(output_dir, name)
                    write_png(out, np.round(np.clip(reconstruction, 0, 1) * 255).astype(np.uint8))
                    line += f" -> {out}"
                if csv_path is None:
                    log(line + (f" ({'; '.join(notes)})" if notes else ""))
        seen = min(start + BATCH, len(files))
        if csv_path is not None and len(files) > PROGRESS_EVERY and (
                seen // PROGRESS_EVERY > start // PROGRESS_EVERY or seen == len(files)):
            log(f"Scored {len(rows):,} of {plural(len(files), 'image')} ({failed:,} failed)")
    if csv_path is not None:
        write_scores_csv(csv_path, rows)
        log(f"Wrote {plural(len(rows), 'score')} to {csv_path}")
    if rows and rows[0]["verdict"]:
        flagged = sum(row["verdict"] == "anomalous" for row in rows)
        log(f"{flagged:,} of {plural(len(rows), 'image')} anomalous"
            + (f" ({failed:,} could not be read)" if failed else ""))
    log(f"Scored {images_per_second(len(rows), time.perf_counter() - started)}")
    return failed
