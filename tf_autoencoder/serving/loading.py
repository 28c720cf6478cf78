"""The ways to load a trained autoencoder: a finished run's model.keras, and an export
(a SavedModel, its .tflite or its .onnx files). All give a `Codec` on NHWC float32 images
in [0, 1]."""
from __future__ import annotations

import os
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



@dataclass
class Codec:
    """What the commands need of a trained autoencoder, batched, on NHWC float32 images
    in [0, 1] of `image_shape` (H, W, C), any number of them:
    encode: (n, H, W, C) -> (n, D) flattened codes;
    reconstruct: (n, H, W, C) -> (n, H, W, C) pixels in [0, 1]."""
    encode: Callable[[np.ndarray], np.ndarray]
    reconstruct: Callable[[np.ndarray], np.ndarray]
    image_shape: tuple[int, int, int]
    runtime: str = "TensorFlow"


def _batched(fn, batch_size):
    def apply(images):
        return np.concatenate([np.asarray(fn(images[i:i + batch_size]))
                               for i in range(0, len(images), batch_size)])
    return apply


def load_finished_model(model_dir: str) -> keras.Model:
    """The final model of a finished run (float32, with .encoder and .decoder)."""
    path = os.path.join(model_dir, FINAL_MODEL)
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {path}: {e}") from None


def load_finished_codec(config: Config) -> Codec:
    """The final model of the finished run in config.model_dir, as a Codec."""
    if not os.path.isfile(os.path.join(config.model_dir, FINAL_MODEL)):
        raise ModelError(f"{config.model_dir} holds no finished run (no {FINAL_MODEL}): train "
                         f"it to the end first (train.py --model_dir {config.model_dir})")
    model = load_finished_model(config.model_dir)

    def encode(images):
        codes = model.encoder(to_model_layout(images, config.data_format), training=False)
        return np.asarray(codes).reshape(len(images), -1)

    def reconstruct(images):
        logits = model(to_model_layout(images, config.data_format), training=False)
        return to_nhwc(tf.sigmoid(logits).numpy(), config.data_format)

    shape = tuple(config.image_shape)
    return Codec(_batched(encode, config.batch_size), _batched(reconstruct, config.batch_size),
                 shape)


def load_saved_model(path: str, batch_size: int = 256) -> Codec:
    """A SavedModel exported by this package: its `encode` and `serving_default`
    signatures, both on NHWC float32 `images`."""
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ModelError(f"cannot load the SavedModel in {path}: {e}") from None
    serve = loaded.signatures.get("serving_default")
    spec = serve.structured_input_signature[1].get("images") if serve else None
    if (spec is None or spec.dtype != tf.float32 or spec.shape.rank != 4
            or not spec.shape[1:].is_fully_defined()
            or "reconstructions" not in serve.structured_outputs):
        raise ModelError(
            f"the SavedModel in {path} has no serving_default signature from float32 "
            "'images' (batch, H, W, C) to 'reconstructions': export the model_dir with "
            "`tf-autoencoder export MODEL_DIR`")
    encode_signature = loaded.signatures.get("encode")

    def encode(images):
        if encode_signature is None:
            raise ModelError(f"the SavedModel in {path} has no encode signature: export it "
                             "with `tf-autoencoder export MODEL_DIR`")
        codes = encode_signature(images=tf.constant(images, tf.float32))["codes"].numpy()
        return codes.reshape(len(codes), -1)

    def reconstruct(images):  # `loaded` stays referenced, and with it the weights
        return serve(images=tf.constant(images, tf.float32))["reconstructions"].numpy()

    return Codec(_batched(encode, batch_size), _batched(reconstruct, batch_size),
                 tuple(spec.shape[1:]))


def load_exported(path: str, batch_size: int = 256) -> Codec:
    """An export in whichever format `path` holds: a .tflite file (LiteRT), an .onnx file
    (ONNX Runtime) or a SavedModel folder (TensorFlow)."""
    if path.endswith(".tflite"):
        return load_tflite(path, batch_size)
    if path.endswith(".onnx"):
        return load_onnx(path, batch_size)
    return load_saved_model(path, batch_size)


def _image_shape(path, input_shape) -> tuple[int, int, int]:
    """(H, W, C) of an input shape (batch, H, W, C) with fixed H, W, C."""
    if len(input_shape) != 4 or min(input_shape[1:]) < 1:
        raise ModelError(f"{path} takes {input_shape}, not (batch, H, W, C) images of one size")
    return tuple(input_shape[1:])


def _not_ours(path, what):
    return ModelError(f"{path} has no {what}: export the model_dir with "
                      "`tf-autoencoder export MODEL_DIR --format tflite,onnx`")


def load_tflite(path: str, batch_size: int = 256) -> Codec:
    """A model.tflite exported by this package: its `serving_default` and `encode`
    signatures, run by LiteRT."""
    from .formats import ConversionError, TFLiteModel

    try:
        model = TFLiteModel(path)
    except ConversionError as e:
        raise ModelError(str(e)) from None
    if model.signatures.get("serving_default") != (["images"], ["reconstructions"]):
        raise _not_ours(path, "serving_default signature from 'images' to 'reconstructions'")

    def encode(images):
        if model.signatures.get("encode") != (["images"], ["codes"]):
            raise _not_ours(path, "encode signature from 'images' to 'codes'")
        codes = model.run("encode", images)
        return codes.reshape(len(codes), -1)

    return Codec(_batched(encode, batch_size),
                 _batched(lambda images: model.run("serving_default", images), batch_size),
                 _image_shape(path, model.input_shape("serving_default")), model.runtime)


def load_onnx(path: str, batch_size: int = 256) -> Codec:
    """An exported serving_default.onnx (images -> reconstructions), run by ONNX Runtime;
    the encode.onnx beside it, if there is one, gives the codes."""
    from .formats import ConversionError, OnnxModel
    from ..model_dir import ONNX_FILES

    paths = {"serving_default": path}
    encode_path = os.path.join(os.path.dirname(path), ONNX_FILES["encode"])
    if os.path.isfile(encode_path):
        paths["encode"] = encode_path
    try:
        model = OnnxModel(paths)
    except ConversionError as e:
        raise ModelError(str(e)) from None
    if model.signatures["serving_default"] != (["images"], ["reconstructions"]):
        raise ModelError(f"{path} is not a model from 'images' to 'reconstructions': give the "
                         f"{ONNX_FILES['serving_default']} of an export (`tf-autoencoder export "
                         "MODEL_DIR --format onnx`)")
    shape = _image_shape(path, model.input_shape("serving_default"))

    def encode(images):
        if model.sessions.get("encode") is None:
            raise ModelError(f"there is no {ONNX_FILES['encode']} beside {path}: export the "
                             "model_dir with `tf-autoencoder export MODEL_DIR --format onnx`")
        codes = model.run("encode", images)
        return codes.reshape(len(codes), -1)

    return Codec(_batched(encode, batch_size),
                 _batched(lambda images: model.run("serving_default", images), batch_size),
                 shape, model.runtime)
