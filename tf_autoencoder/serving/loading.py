"""The ways to load a trained autoencoder: a finished run's model.keras, and an export
in any of its formats (formats.FORMATS: the SavedModel here, the others in their own
modules). All give a `Codec` on NHWC float32 images in [0, 1], whose codes are NHWC,
flattened, whatever layout the model was trained in."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ..model import models  # noqa: F401  (registers the model classes for load_model)
from ..config import Config
from ..errors import ModelError
from ..model.layout import to_model_layout, to_nhwc
from ..model_dir import FINAL_MODEL
from .formats import SAVED_MODEL, SIGNATURES, format_of


@dataclass
class Codec:
    """What the commands need of a trained autoencoder, batched, on NHWC float32 images
    in [0, 1] of `image_shape` (H, W, C), any number of them:
    encode: (n, H, W, C) -> (n, D) codes, NHWC (h, w, k) flattened;
    reconstruct: (n, H, W, C) -> (n, H, W, C) pixels in [0, 1];
    score: (n, H, W, C) -> ((n,) scores, (n,) bool: above the export's threshold,
    (n, H, W) float32 anomaly maps, or None from a SavedModel exported before maps), or
    ModelError saying how to re-export a model without it."""
    encode: Callable[[np.ndarray], np.ndarray]
    reconstruct: Callable[[np.ndarray], np.ndarray]
    image_shape: tuple[int, int, int]
    runtime: str = SAVED_MODEL.runtime  # TensorFlow
    score: Callable[[np.ndarray], tuple] | None = None

    def __post_init__(self):
        if self.score is None:
            self.score = missing("this model has no score signature: give an export made by "
                                 "`tf-autoencoder export MODEL_DIR`")


def missing(message: str) -> Callable:
    """A signature function that a model lacks: it raises ModelError(message)."""
    def fail(images):
        raise ModelError(message)
    return fail


def batched(fn, batch_size):
    """`fn` applied batch_size images at a time; its outputs (an array, or a tuple of
    them, None for one it does not give) joined."""
    def apply(images):
        parts = [fn(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        if parts and isinstance(parts[0], tuple):
            return tuple(None if parts[0][k] is None
                         else np.concatenate([np.asarray(part[k]) for part in parts])
                         for k in range(len(parts[0])))
        return np.concatenate([np.asarray(part) for part in parts])
    return apply



def load_finished_model(model_dir: str) -> keras.Model:
    """The final model of a finished run (float32, with .encoder and .decoder)."""
    path = os.path.join(model_dir, FINAL_MODEL)
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        if os.path.isfile(path) and not zipfile.is_zipfile(path):  # Keras says "not found"
            raise ModelError(f"{path} is damaged (not a .keras zip file): train the run again "
                             "(raise --epochs, or --overwrite)") from None
        raise ModelError(f"cannot load {path}: {e}") from None


def load_finished_codec(config: Config) -> Codec:
    """The final model of the finished run in config.model_dir, as a Codec."""
    if not os.path.isfile(os.path.join(config.model_dir, FINAL_MODEL)):
        raise ModelError(f"{config.model_dir} holds no finished run (no {FINAL_MODEL}): train "
                         f"it to the end first (train.py --model_dir {config.model_dir})")
    model = load_finished_model(config.model_dir)

    def encode(images):  # NHWC codes, flattened, as the export's encode gives them
        codes = model.encoder(to_model_layout(images, config.data_format), training=False)
        return to_nhwc(np.asarray(codes), config.data_format).reshape(len(images), -1)

    def reconstruct(images):
        logits = model(to_model_layout(images, config.data_format), training=False)
        return to_nhwc(tf.sigmoid(logits).numpy(), config.data_format)

    shape = tuple(config.image_shape)
    return Codec(batched(encode, config.batch_size), batched(reconstruct, config.batch_size),
                 shape)


def load_saved_model(path: str, batch_size: int = 256) -> Codec:
    """A SavedModel exported by this package: its `encode` and `serving_default`
    signatures, both on NHWC float32 `images`."""
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ModelError(f"cannot load the SavedModel in {path}: {e}") from None
    images_name, (reconstructions_name,) = SIGNATURES["serving_default"]
    _, (codes_name,) = SIGNATURES["encode"]
    _, score_names = SIGNATURES["score"]
    serve = loaded.signatures.get("serving_default")
    spec = serve.structured_input_signature[1].get(images_name) if serve else None
    if (spec is None or spec.dtype != tf.float32 or spec.shape.rank != 4
            or not spec.shape[1:].is_fully_defined()
            or reconstructions_name not in serve.structured_outputs):
        raise ModelError(
            f"the SavedModel in {path} has no serving_default signature from float32 "
            f"'{images_name}' (batch, H, W, C) to '{reconstructions_name}': export the "
            "model_dir with `tf-autoencoder export MODEL_DIR`")
    encode_signature = loaded.signatures.get("encode")

    def encode(images):
        if encode_signature is None:
            raise ModelError(f"the SavedModel in {path} has no encode signature: export it "
                             "with `tf-autoencoder export MODEL_DIR`")
        inputs = {images_name: tf.constant(images, tf.float32)}
        codes = encode_signature(**inputs)[codes_name].numpy()
        return codes.reshape(len(codes), -1)

    def reconstruct(images):  # `loaded` stays referenced, and with it the weights
        inputs = {images_name: tf.constant(images, tf.float32)}
        return serve(**inputs)[reconstructions_name].numpy()

    score_signature = loaded.signatures.get("score")

    def score(images):  # an export from before the maps has scores and verdicts only
        outputs = score_signature(**{images_name: tf.constant(images, tf.float32)})
        return tuple(outputs[name].numpy() if name in outputs else None for name in score_names)

    return Codec(batched(encode, batch_size), batched(reconstruct, batch_size),
                 tuple(spec.shape[1:]), SAVED_MODEL.runtime,
                 batched(score, batch_size) if score_signature is not None
                 else missing(f"the SavedModel in {path} has no score signature (it was exported "
                              "before anomaly scores): export the run again with "
                              "`tf-autoencoder export MODEL_DIR`"))


def load_exported(path: str, batch_size: int = 256) -> Codec:
    """An export in whichever format `path` holds (formats.format_of): a SavedModel
    folder, a .tflite file, an .onnx file, each run in its own runtime."""
    return format_of(path).function("load")(path, batch_size)
