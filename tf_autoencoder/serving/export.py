"""Export for serving: MODEL_DIR/export/<version>/, written atomically. A SavedModel
always, and on request the other formats of formats.FORMATS beside it (model.tflite for
LiteRT, <signature>.onnx for ONNX Runtime), each converted and checked by its own module.

Signatures, all NHWC float32 with a dynamic batch, whatever layout and precision the model
trained in (the export computes in float32, NHWC):
  serving_default  images (batch, H, W, C) in [0, 1] -> reconstructions (batch, H, W, C) in [0, 1]
  encode           images -> codes: (batch, h, w, k) convolutional, (batch, k) fully connected
  decode           codes -> reconstructions
  score            images -> scores (batch,): each image's mean squared error per pixel
                   value against its reconstruction, or with --anomaly_score code the
                   Mahalanobis distance of its code to the normal training images' codes
                   (their mean and precision are constants of the export);
                   is_anomalous (batch,) bool: score above the threshold calibrated on
                   the validation images
                   anomaly_maps (batch, H, W) float32: where each image is unusual, per
                   pixel (model/maps.py): the squared error against its reconstruction or
                   1 - SSIM (--anomaly_map), smoothed (--anomaly_map_sigma); for a
                   code-scored run too, whose score stays the code distance
  reconstruct_bytes, encode_bytes, score_bytes (the SavedModel's alone)
                   the same on image_bytes (batch,) string: encoded PNG, JPEG, GIF or BMP
                   files, prepared in the graph as training prepared them
                   (preparation.prepare_image); what TF Serving's REST API takes as
                   {"b64": ...}

`tf-autoencoder export MODEL_DIR [--format tflite,onnx]` exports a finished run; training
exports a SavedModel at its end.
"""
import math
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from ..config import MAX_PIXELS, Config
from ..errors import ConversionError, WriteError
from ..pause import pause_point
from ..preparation import prepare_image, to_model_input
from ..files import fsync_dir, fsync_tree, remove_leftovers, temp_path, write_reason
from .formats import BYTES_SIGNATURES, FORMATS, SAVED_MODEL, SIGNATURES
from .loading import load_finished_model
from ..model.maps import anomaly_map
from ..model.models import named_weights, serving_twin
from ..model_dir import (EXPORT_DIR, export_versions, load_finished_run, read_code_gaussian,
                         read_threshold)

# Exports are written into a temporary folder (files.temp_path), then renamed to their
# version. TF Serving and export_versions() only see integer names, so a crash never
# leaves a version behind, and the next export removes what a killed one left.


def serving_module(model: keras.Model, threshold: float = math.inf,
                   gaussian: dict | None = None, map_kind: str = "l2",
                   map_sigma: float = 4.0) -> tf.Module:
    """A tf.Module with the four signature functions (as .reconstruct, .encode, .decode,
    .score) of `model`, an NHWC float32 model (models.serving_twin). `threshold`: the
    score above which an image is anomalous, a constant of the score signature (inf: a
    model without a calibrated threshold flags nothing). `gaussian` (run/anomaly.py's
    code_gaussian, of NHWC codes flattened): score by the code's Mahalanobis distance to
    it; None: by the reconstruction error. map_kind, map_sigma: the anomaly map the score
    signature gives beside the score (maps.anomaly_map's kind and sigma).

    It tracks the model's weights only, not the model object, so the SavedModel holds no
    optimizer state and loads without Keras or this package.
    """
    # The arguments' names are the signatures' input names, as SIGNATURES has them. The
    # functions are graph ops already (autograph=False): AutoGraph would only spend
    # seconds transpiling the model's and the maps' code on each export.
    images_name, (reconstructions,) = SIGNATURES["serving_default"]
    (codes_name,) = SIGNATURES["encode"][1]
    scores_name, anomalous_name, maps_name = SIGNATURES["score"][1]
    images_spec = tf.TensorSpec((None, *model.encoder.input_shape[1:]), tf.float32,
                                name=images_name)
    codes_spec = tf.TensorSpec((None, *model.encoder.output_shape[1:]), tf.float32,
                               name=codes_name)

    @tf.function(input_signature=[images_spec], autograph=False)
    def reconstruct(images):
        return {reconstructions: tf.sigmoid(model(images, training=False))}

    @tf.function(input_signature=[images_spec], autograph=False)
    def encode(images):
        return {codes_name: model.encoder(images, training=False)}

    @tf.function(input_signature=[codes_spec], autograph=False)
    def decode(codes):
        return {reconstructions: tf.sigmoid(model.decoder(codes, training=False))}

    def code_distances(images, reconstructed):
        codes = model.encoder(images, training=False)
        # Constants of the graph, made while it is traced: tensors made outside it would be
        # captured, and tf2onnx makes a captured tensor an input of the ONNX model.
        mean = tf.constant(gaussian["mean"], tf.float32)
        precision = tf.constant(gaussian["precision"], tf.float32)
        # NHWC codes flattened row by row, as the Gaussian's were (anomaly.image_codes).
        centred = tf.reshape(codes, [-1, mean.shape[0]]) - mean
        squared = tf.reduce_sum(tf.matmul(centred, precision) * centred, axis=1)
        return tf.sqrt(tf.maximum(squared, 0.0))  # >= 0 but for float32 rounding

    def reconstruction_errors(images, reconstructed):
        return tf.reduce_mean(tf.square(images - reconstructed), axis=[1, 2, 3])

    @tf.function(input_signature=[images_spec], autograph=False)
    def score(images):
        reconstructed = tf.sigmoid(model(images, training=False))
        scores = (reconstruction_errors if gaussian is None else code_distances)(
            images, reconstructed)
        return {scores_name: scores,
                anomalous_name: tf.greater(scores, tf.constant(threshold, tf.float32)),
                maps_name: anomaly_map(images, reconstructed, map_kind, map_sigma)}

    bytes_spec = tf.TensorSpec((None,), tf.string, name=BYTES_SIGNATURES["score_bytes"][0])
    shape = tuple(model.encoder.input_shape[1:])

    # A function of its own, traced once and called by the three signatures on bytes:
    # traced into each, it made the export take two thirds longer.
    @tf.function(input_signature=[bytes_spec], autograph=False)
    def prepared(image_bytes):
        """Each file's bytes -> float32 (H, W, C) in [0, 1]: the one preparation."""
        pixels = tf.map_fn(lambda data: prepare_image(data, shape, MAX_PIXELS), image_bytes,
                           fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        return to_model_input(pixels)

    @tf.function(input_signature=[bytes_spec], autograph=False)
    def reconstruct_bytes(image_bytes):
        return reconstruct(prepared(image_bytes))

    @tf.function(input_signature=[bytes_spec], autograph=False)
    def encode_bytes(image_bytes):
        return encode(prepared(image_bytes))

    @tf.function(input_signature=[bytes_spec], autograph=False)
    def score_bytes(image_bytes):
        return score(prepared(image_bytes))

    module = tf.Module(name="autoencoder")
    # The weights by name ("encoder/block0_conv0/kernel"), so export_holding compares
    # them by name; not the random-number state of dropout or the VAE's sampling, which
    # inference does not use. The tf.Variables under Keras' variables, not Keras'
    # wrappers: TFLite's converter finds the values of the variables a SavedModel tracks
    # itself, and it misses those behind the wrappers (the .tflite then reads
    # uninitialised weights: NaN).
    module.model_variables = {name: weight.value for name, weight in named_weights(model).items()}
    # Not named `serve`: the converter takes a SavedModel with a `serve` attribute for a
    # Keras model.export() one and converts its serving_default signature alone.
    module.reconstruct, module.encode, module.decode, module.score = (reconstruct, encode,
                                                                      decode, score)
    module.reconstruct_bytes, module.encode_bytes, module.score_bytes = (
        reconstruct_bytes, encode_bytes, score_bytes)
    return module


def signature_functions(module: tf.Module) -> dict:
    """serving_module's functions by their signature names (formats.SIGNATURES)."""
    functions = {"serving_default": module.reconstruct, "encode": module.encode,
                 "decode": module.decode, "score": module.score}
    return {name: functions[name] for name in SIGNATURES}


def write_saved_model(module: tf.Module, folder: str) -> None:
    """Saves `module` (serving_module's) as a SavedModel with its signatures, those on
    image bytes too (formats.BYTES_SIGNATURES), into `folder`."""
    on_bytes = {name: getattr(module, name) for name in BYTES_SIGNATURES}
    tf.saved_model.save(module, folder, signatures={**signature_functions(module), **on_bytes})


def export_saved_model(model: keras.Model, config: Config, export_base: str,
                       formats=("saved_model",), threshold: float = math.inf,
                       gaussian: dict | None = None) -> str:
    """Writes `model` as SavedModel version max(existing) + 1 under `export_base`; returns
    its path. `formats` may add the other names of formats.FORMATS ("tflite", "onnx"):
    their files go into the same version, converted from the SavedModel and checked in
    their runtimes first. Written to a temporary directory beside it, then renamed into
    place.

    threshold: the calibrated anomaly threshold the score signature carries; gaussian:
    the codes' Gaussian it measures distances with (None: it scores reconstructions);
    its anomaly maps are config.anomaly_map's, smoothed by config.anomaly_map_sigma.

    Raises WriteError, with one clear line, when `export_base` cannot be written;
    ConversionError when a conversion is wrong, MissingExtra when its converter or
    runtime is not installed. Either way no version appears.
    """
    wanted = [fmt for name, fmt in FORMATS.items() if fmt is SAVED_MODEL or name in formats]
    module = serving_module(serving_twin(model, config), threshold, gaussian,
                            config.anomaly_map, config.anomaly_map_sigma)
    try:
        os.makedirs(export_base, exist_ok=True)
        remove_leftovers(export_base)  # of exports that were killed
        # os.mkdir, not mkdtemp: the version keeps the umask's permissions (mkdtemp's are
        # 0700), so a server running as another user can read it.
        tmp = temp_path(os.path.join(export_base, "export"))
        os.mkdir(tmp)
    except OSError as e:
        raise WriteError(f"cannot write to export directory {export_base}: "
                         f"{write_reason(e)}") from None
    try:
        for fmt in wanted:  # the SavedModel first: the others are converted from it
            fmt.require(f"--format {fmt.name}", export=True)
            fmt.function("convert")(module, tmp)
            if fmt.check:
                fmt.function("check")(module, tmp)
        pause_point("export")
        fsync_tree(tmp)
        path = _rename_to_next_version(tmp, export_base)
        fsync_dir(export_base)
        return path
    except (tf.errors.OpError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"cannot write the export to {export_base}: {write_reason(e)} "
                         "(nothing exported)") from None
    except ConversionError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConversionError(f"{e} (nothing exported)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rename_to_next_version(tmp: str, export_base: str) -> str:
    """Renames `tmp` to the next free version; an export that races us to a number wins it."""
    version = max(export_versions(export_base), default=0) + 1
    while True:
        target = os.path.join(export_base, str(version))
        try:
            os.rename(tmp, target)  # fails if another export already filled `target`
            return target
        except OSError:
            if not os.path.lexists(target):
                raise
            version += 1


def export_holding(model: keras.Model, export_base: str) -> str | None:
    """The newest version under `export_base` if it holds exactly `model`'s weights, by
    name (a float32 model, as exports are), else None. Only the weights count: not the
    random-number state of dropout or the VAE's sampling, which a rerun builds anew."""
    versions = export_versions(export_base)
    if not versions:
        return None
    path = os.path.join(export_base, str(versions[-1]))
    try:
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    except (tf.errors.OpError, ValueError):  # incomplete
        return None
    saved = {}
    for key in reader.get_variable_to_shape_map():
        match = _EXPORTED_WEIGHT.fullmatch(key)
        if match:
            saved[_unescape(match[1])] = key
    weights = named_weights(model)
    if saved.keys() != weights.keys():  # another model, or an export of older versions
        return None
    for name, weight in weights.items():
        value = reader.get_tensor(saved[name])
        if value.shape != tuple(weight.shape) or not np.array_equal(value, np.asarray(weight)):
            return None
    return path


# A weight in a SavedModel's checkpoint: serving_module's model_variables[name], its name
# escaped by TensorFlow ("." -> "..", "/" -> ".S").
_EXPORTED_WEIGHT = re.compile(r"model_variables/(.+)/\.ATTRIBUTES/VARIABLE_VALUE")


def _unescape(name: str) -> str:
    return re.sub(r"\.(.)", lambda m: "/" if m[1] == "S" else m[1], name)


def export_model_dir(model_dir: str, export_base: str | None = None,
                     formats=("saved_model",)) -> str:
    """Exports the final model of a finished run; returns the new version's path.

    export_base defaults to MODEL_DIR/export; formats as export_saved_model's. The score
    signature carries the run's threshold.json, and with --anomaly_score code its
    code_gaussian.npz (ConfigError if it has none).
    """
    config = load_finished_run(model_dir)
    threshold = read_threshold(model_dir)
    gaussian = read_code_gaussian(model_dir) if config.anomaly_score == "code" else None
    model = load_finished_model(model_dir)
    return export_saved_model(model, config, export_base or os.path.join(model_dir, EXPORT_DIR),
                              formats, threshold, gaussian)

