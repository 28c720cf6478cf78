"""Reconstruct image files with an exported model (a SavedModel, a .tflite or an .onnx
file, each in its own runtime) and score each one.

The score is the one the export's score signature computes for the image as the model
sees it, prepared as training prepared it (preparation.prepare_image): its
reconstruction error (the mean squared error per pixel against its reconstruction), or
for a run trained with --anomaly_score code the distance of its code to the normal
images' codes. Images unlike the training data score higher, so a high score flags an
anomaly: each line says "anomalous" when the score is above the threshold the export
carries, else "normal". An export without a score signature gets the reconstruction
error and no verdict. The export's anomaly map of each image gives the strongest point
(the CSV's map_max, map_row, map_column, in the input's pixels) and, with --maps, a
picture (map_figure.py); with --tiles a large image is scored in tiles (tiles.py).

`tf-autoencoder predict MODEL img1.png folder/ ... [--csv scores.csv] [--output_dir DIR]
[--maps DIR] [--tiles]`

Folders are walked recursively for image files. Images are read, reconstructed and
scored a batch at a time (BATCH images), so memory stays bounded however many there are;
a large image scored in tiles is held alone.
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
from ..images import LIBJPEG_NOTE, MAX_PIXELS, Header, check_pixels, describe_size, write_png
from ..logs import stderr_without
from ..model.maps import anomaly_map
from ..pause import pause_point
from ..preparation import (describe_preparation, prepare_image, prepare_unresized,
                           to_input_pixel, to_model_input)
from ..words import images_per_second, plural
from .loading import load_exported
from .map_figure import write_map_png
from .tiles import fits_in_tiles, score_in_tiles


def read_image(path: str, shape: tuple[int, int, int], max_pixels: int = MAX_PIXELS,
               tiles: bool = False) -> tuple[np.ndarray, list[str], Header, bool]:
    """Reads a PNG, JPEG, GIF or BMP file as the model expects it, by the preparation
    that training used (preparation.prepare_image).

    shape: the model's (H, W, C). Returns float32 (H, W, C) in [0, 1], notes on what was
    changed to fit, the file's header and False; with `tiles`, an image larger than the
    model (tiles.fits_in_tiles) instead comes at its own size, uint8 (h, w, C), prepared
    but not resized (preparation.prepare_unresized), and True. Raises OSError if
    unreadable, ValueError if not an image or one of more than `max_pixels` pixels (told
    by its header, before decoding).
    """
    header = check_pixels(path, max_pixels)
    tiled = tiles and fits_in_tiles(header.height, header.width, shape)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with stderr_without(LIBJPEG_NOTE):  # our line says it, with the file's name
            if tiled:
                return (_unresized(shape[2])(tf.constant(data)).numpy(),
                        describe_preparation(header, (header.height, header.width, shape[2])),
                        header, True)
            pixels = _preparation(tuple(shape))(tf.constant(data))
    except tf.errors.InvalidArgumentError as e:
        if "Unknown image file format" in e.message:
            raise ValueError("not an image (PNG, JPEG, GIF or BMP expected)") from None
        detail = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]|\n.*", "", e.message,
                        flags=re.S).strip()  # TF's op context and graph trace
        raise ValueError(f"damaged image ({detail})") from None
    return to_model_input(pixels).numpy(), describe_preparation(header, shape), header, False


@functools.lru_cache(maxsize=None)
def _preparation(shape: tuple[int, int, int]):
    """prepare_image for one model's shape, traced once (a graph, as in tf.data)."""
    return tf.function(lambda data: prepare_image(data, shape),
                       input_signature=[tf.TensorSpec([], tf.string)])


@functools.lru_cache(maxsize=None)
def _unresized(channels: int):
    """prepare_unresized for one model's channels, traced once."""
    return tf.function(lambda data: prepare_unresized(data, channels),
                       input_signature=[tf.TensorSpec([], tf.string)])


def describe_images(shape: tuple[int, int, int]) -> str:
    """'greyscale images 28 wide x 28 high' for the model's (H, W, C)."""
    height, width, channels = shape
    colour = {1: "greyscale", 3: "RGB"}.get(channels, f"{channels}-channel")
    return f"{colour} images {describe_size(height, width)}"


def output_names(paths: list[str], kind: str = "reconstruction") -> list[str]:
    """<stem>_<kind>.png per input; inputs that share a stem get -2, -3, ..."""
    used, names = set(), []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_{kind}.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{kind}-{n}.png"
        used.add(name)
        names.append(name)
    return names


# Images read, reconstructed and scored at once: bounds the memory a run of any size takes.
BATCH = 256
# A line saying how far a run has got, every this many images (runs of more images).
PROGRESS_EVERY = 10_000
CSV_COLUMNS = ("path", "score")
# Bytes a map picture (predict --maps) takes at most, about: checked free before scoring.
MAP_PNG_BYTES = 400_000


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


def check_inputs_kept(inputs: list[str], outputs: list[str], what: str = "reconstruction",
                      flag: str = "--output_dir") -> None:
    """ConfigError, before any image is scored, if an output (`what`: a reconstruction,
    a map picture) would be written over one of the images read (a folder holding
    earlier outputs given as both)."""
    read = {os.path.realpath(path): path for path in inputs}
    for output in outputs:
        if os.path.realpath(output) in read:
            raise ConfigError(f"the {what} {output} would overwrite "
                              f"{read[os.path.realpath(output)]}, one of the images to score: "
                              f"give another {flag}")


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
                  error=print, max_pixels: int = MAX_PIXELS, csv_path: str | None = None,
                  maps_dir: str | None = None, tiles: bool = False) -> int:
    """Scores each image file (and each under a folder of `paths`), BATCH at a time; with
    `output_dir`, writes each one's reconstruction there; with `maps_dir`, a picture of
    each one's anomaly map there (<stem>_map.png: map_figure.py); with `csv_path`, one
    CSV row per image (path, score, verdict, notes: what the preparation changed, and the
    strongest point of its map: value, row and column in the input's pixels) at the end.
    With `tiles`, an image larger than the model is scored in tiles at its own size
    (tiles.py) instead of being resized.
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
    map_names = output_names(files, "map") if maps_dir is not None else [None] * len(files)
    if output_dir is not None:
        check_inputs_kept(files, [os.path.join(output_dir, name) for name in names])
        # A PNG is at most about its pixels' bytes, and a CSV row its path and a score.
        check_writable("--output_dir", output_dir, len(files) * (int(np.prod(shape)) + 1024))
    if maps_dir is not None:
        check_inputs_kept(files, [os.path.join(maps_dir, name) for name in map_names],
                          "map picture", "--maps")
        check_writable("--maps", maps_dir, len(files) * MAP_PNG_BYTES)
    if csv_path is not None:
        check_writable("--csv", csv_path, sum(len(path) + 64 for path in files))
    said = set()  # what an older export lacks, said once

    def score(images, reconstructions=None):
        """float32 images -> (scores, bool verdicts or None, maps): the export's score
        signature; for an export from before it, the reconstruction error and no verdict;
        from before the maps, the default map of its reconstructions."""
        try:
            scores, flagged, maps = model.score(images)
        except ModelError as e:  # an export from before the score signature
            if "verdicts" not in said:
                log(f"No verdicts: {e}")
                said.add("verdicts")
            scores = flagged = maps = None
        if maps is None:
            if reconstructions is None:
                reconstructions = model.reconstruct(images)
            if scores is not None and "maps" not in said:
                log(f"No maps in {model_path} (exported before them): maps of its "
                    "reconstructions' squared error, smoothed as by default; export the run "
                    "again for the map it was trained to serve")
                said.add("maps")
            maps = np.asarray(anomaly_map(images, reconstructions))
        if scores is None:
            scores = np.mean(np.square(images - reconstructions), axis=(1, 2, 3))
        return scores, flagged, maps

    rows = []

    def emit(path, name, map_name, notes, pixels, value, flag, the_map, reconstruction, peak):
        """One scored image: its CSV row, its line, its pictures."""
        row, column = peak
        verdict = None if flag is None else ("anomalous" if flag else "normal")
        rows.append({"path": path, "score": f"{value:.6f}", "verdict": verdict or "",
                     "notes": "; ".join(notes), "map_max": f"{float(the_map.max()):.6f}",
                     "map_row": row, "map_column": column})
        line = f"{path}: score {value:.6f}" + (f", {verdict}" if verdict else "")
        if name is not None:
            out = os.path.join(output_dir, name)
            write_png(out, np.round(np.clip(reconstruction, 0, 1) * 255).astype(np.uint8))
            line += f" -> {out}"
        if map_name is not None:
            out = os.path.join(maps_dir, map_name)
            os.makedirs(maps_dir, exist_ok=True)
            write_map_png(out, pixels, the_map,
                          f"{os.path.basename(path)}: score {value:.6g}"
                          + (f", {verdict}" if verdict else "")
                          + f"; strongest at row {row}, column {column}")
            line += f", map -> {out}"
        if csv_path is None:
            log(line + (f" ({'; '.join(notes)})" if notes else ""))

    def score_whole(pending):
        """Scores the images read whole, as one batch, and emits them."""
        if not pending:
            return
        images = np.stack([entry[4] for entry in pending])
        reconstructions = model.reconstruct(images)
        scores, flagged, maps = score(images, reconstructions)
        for i, (path, name, map_name, notes, pixels, header) in enumerate(pending):
            peak = np.unravel_index(int(np.argmax(maps[i])), maps[i].shape)
            emit(path, name, map_name, notes, pixels, float(scores[i]),
                 None if flagged is None else bool(flagged[i]), maps[i], reconstructions[i],
                 to_input_pixel(int(peak[0]), int(peak[1]), (header.height, header.width),
                                shape))
        pending.clear()

    failed = 0
    pause_point("predict")
    started = time.perf_counter()
    for start in range(0, len(files), BATCH):
        pending = []  # images read whole, scored together
        for path, name, map_name in zip(files[start:start + BATCH], names[start:start + BATCH],
                                        map_names[start:start + BATCH]):
            try:
                pixels, notes, header, tiled = read_image(path, shape, max_pixels, tiles)
            except OSError as e:
                error(f"{path}: {e.strerror or e}")
                failed += 1
                continue
            except ValueError as e:
                error(f"{path}: {e}")
                failed += 1
                continue
            if not tiled:
                pending.append((path, name, map_name, notes, pixels, header))
                continue
            # A large image, alone: the ones before it first, so lines keep the files' order
            # and at most one large image is held at a time.
            score_whole(pending)
            tiled = score_in_tiles(pixels, shape, score,
                                   model.reconstruct if name is not None else None)
            notes = notes + [f"scored in {plural(tiled.tiles, 'tile')} of "
                             f"{describe_size(*shape[:2])}"]
            peak = np.unravel_index(int(np.argmax(tiled.anomaly_map)), tiled.anomaly_map.shape)
            emit(path, name, map_name, notes, pixels, tiled.score, tiled.flagged,
                 tiled.anomaly_map, tiled.reconstruction, (int(peak[0]), int(peak[1])))
        score_whole(pending)
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
