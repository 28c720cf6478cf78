"""Reconstruct image files with an exported model (a SavedModel, a .tflite or an .onnx
file, each in its own runtime) and score each one.

The score is the reconstruction error: the mean squared error per pixel between the
image as the model sees it (converted to the model's channels, resized to its size,
pixels in [0, 1]) and its reconstruction. Images unlike the training data reconstruct
worse, so a high score flags an anomaly: each line says "anomalous" when the score is
above the threshold the export carries (its score signature), else "normal".

`tf-autoencoder predict MODEL img1.png img2.jpg ... [--output_dir DIR]`
"""
import os
import re

import numpy as np
import tensorflow as tf

from ..errors import ModelError
from ..images import LIBJPEG_NOTE, MAX_PIXELS, check_pixels, write_png
from ..logs import stderr_without
from ..pause import pause_point
from .loading import load_exported


def read_image(path: str, shape: tuple[int, int, int],
               max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Reads a PNG, JPEG, GIF or BMP file as the model expects it.

    shape: the model's (H, W, C). Returns float32 (H, W, C) in [0, 1] and notes on what
    was changed to fit. Raises OSError if unreadable, ValueError if not an image or one
    of more than `max_pixels` pixels (told by its header, before decoding).
    """
    check_pixels(path, max_pixels)
    with open(path, "rb") as f:
        data = f.read()
    try:
        with stderr_without(LIBJPEG_NOTE):  # our line says it, with the file's name
            image = tf.io.decode_image(data, dtype=tf.float32, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
        if "Unknown image file format" in e.message:
            raise ValueError("not an image (PNG, JPEG, GIF or BMP expected)") from None
        detail = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", e.message).strip()  # TF's op context
        raise ValueError(f"damaged image ({detail})") from None
    height, width, channels = shape
    notes = []
    if image.shape[-1] in (2, 4):
        image = image[..., :-1] * image[..., -1:]
        notes.append("transparency flattened onto black")
    if image.shape[-1] == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
        notes.append("RGB converted to greyscale")
    elif image.shape[-1] == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
        notes.append("greyscale converted to RGB")
    if tuple(image.shape[:2]) != (height, width):
        notes.append(f"resized from {describe_size(*image.shape[:2])} to "
                     f"{describe_size(height, width)}")
        image = tf.clip_by_value(tf.image.resize(image, (height, width), antialias=True), 0, 1)
    return image.numpy(), notes


def describe_size(height: int, width: int) -> str:
    """'160 wide x 120 high': a bare 120x160 reads as width x height to some, height x
    width (NumPy's order) to others."""
    return f"{width} wide x {height} high"


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


def predict_files(model_path: str, paths: list[str], output_dir: str, *, log=print,
                  error=print, max_pixels: int = MAX_PIXELS) -> int:
    """Writes each image's reconstruction into `output_dir` and logs one line per image
    with its score; files that fail get one line through `error` and the rest go on.
    `model_path`: a SavedModel folder, a .tflite or an .onnx file. Returns the number of
    files that failed. Raises loading.ModelError for an unusable model,
    formats.MissingExtra when its runtime is not installed."""
    model = load_exported(model_path)
    shape = model.image_shape
    log(f"Model: {model_path} ({model.runtime}): {describe_images(shape)}")
    images, done = [], []
    for path in paths:
        try:
            image, notes = read_image(path, shape, max_pixels)
        except OSError as e:
            error(f"{path}: {e.strerror or e}")
            continue
        except ValueError as e:
            error(f"{path}: {e}")
            continue
        images.append(image)
        done.append((path, notes))
    pause_point("predict")
    if images:
        images = np.stack(images)
        reconstructions = model.reconstruct(images)
        try:
            scores, verdicts = model.score(images)
            verdicts = [", anomalous" if flagged else ", normal" for flagged in verdicts]
        except ModelError as e:  # an export from before the score signature: no verdict
            log(f"No verdicts: {e}")
            scores = np.mean(np.square(images - reconstructions), axis=(1, 2, 3))
            verdicts = [""] * len(images)
        for (path, notes), name, reconstruction, score, verdict in zip(
                done, output_names([p for p, _ in done]), reconstructions, scores, verdicts):
            out = os.path.join(output_dir, name)
            write_png(out, np.round(np.clip(reconstruction, 0, 1) * 255).astype(np.uint8))
            log(f"{path}: mse {score:.6f}{verdict} -> {out}"
                + (f" ({'; '.join(notes)})" if notes else ""))
    return len(paths) - len(done)

