"""SavedModel export for serving: MODEL_DIR/export/<version>/, written atomically.

Signatures, all NHWC float32 with a dynamic batch, whatever layout and precision the model
trained in (the SavedModel computes in float32):
  serving_default  images (batch, H, W, C) in [0, 1] -> reconstructions (batch, H, W, C) in [0, 1]
  encode           images -> codes: (batch, h, w, k) convolutional, (batch, k) fully connected
  decode           codes -> reconstructions

`tf-autoencoder export MODEL_DIR` exports a finished run; training exports at its end.
"""
import os
import secrets
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from .config import Config
from .files import fsync_dir, fsync_tree
from .layout import shape_to_nhwc, to_model_layout, to_nhwc
from .loading import load_finished_model
from .models import float32_twin
from .model_dir import CONFIG_FILE, EXPORT_DIR, export_versions

# Exports are written under this prefix, then renamed to their version. TF Serving and
# export_versions() only see integer names, so a crash never leaves a version behind.
TMP_PREFIX = ".tmp-export-"
STALE_AFTER_S = 3600  # a temporary export this old was left by a crash: removed


def serving_module(model: keras.Model, data_format: str) -> tf.Module:
    """A tf.Module with the three signature functions (as .serve, .encode, .decode).

    It tracks the model's weights only, not the model object, so the SavedModel holds no
    optimizer state and loads without Keras or this package.
    """
    image_shape = shape_to_nhwc(model.encoder.input_shape[1:], data_format)
    code_shape = shape_to_nhwc(model.encoder.output_shape[1:], data_format)
    images_spec = tf.TensorSpec((None, *image_shape), tf.float32, name="images")
    codes_spec = tf.TensorSpec((None, *code_shape), tf.float32, name="codes")

    def to_model(x):  # codes without spatial axes pass through
        return to_model_layout(x, data_format)

    def from_model(x):
        return to_nhwc(x, data_format)

    @tf.function(input_signature=[images_spec])
    def serve(images):
        logits = model(to_model(images), training=False)
        return {"reconstructions": from_model(tf.sigmoid(logits))}

    @tf.function(input_signature=[images_spec])
    def encode(images):
        return {"codes": from_model(model.encoder(to_model(images), training=False))}

    @tf.function(input_signature=[codes_spec])
    def decode(codes):
        logits = model.decoder(to_model(codes), training=False)
        return {"reconstructions": from_model(tf.sigmoid(logits))}

    module = tf.Module(name="autoencoder")
    module.model_variables = list(model.variables)
    module.serve, module.encode, module.decode = serve, encode, decode
    return module


def export_saved_model(model: keras.Model, config: Config, export_base: str) -> str:
    """Writes `model` as SavedModel version max(existing) + 1 under `export_base`; returns
    its path. Written to a temporary directory beside it, then renamed into place.

    Raises OSError, with one clear line, when `export_base` cannot be written.
    """
    module = serving_module(float32_twin(model, config), config.data_format)
    try:
        os.makedirs(export_base, exist_ok=True)
        _remove_stale_exports(export_base)
        # os.mkdir, not mkdtemp: the version keeps the umask's permissions (mkdtemp's are
        # 0700), so a server running as another user can read it.
        tmp = os.path.join(export_base, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(tmp)
    except OSError as e:
        raise OSError(f"cannot write to export directory {export_base}: "
                      f"{e.strerror or e}") from None
    try:
        tf.saved_model.save(module, tmp, signatures={
            "serving_default": module.serve, "encode": module.encode, "decode": module.decode})
        fsync_tree(tmp)
        path = _rename_to_next_version(tmp, export_base)
        fsync_dir(export_base)
        return path
    except tf.errors.OpError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"cannot write SavedModel to {export_base}: {e.message}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_exports(export_base: str) -> None:
    """Removes temporary exports that crashed runs left behind."""
    for name in os.listdir(export_base):
        path = os.path.join(export_base, name)
        if name.startswith(TMP_PREFIX) and time.time() - os.path.getmtime(path) > STALE_AFTER_S:
            shutil.rmtree(path, ignore_errors=True)


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
    """The newest version under `export_base` if it holds exactly `model`'s weights
    (a float32 model, as exports are), else None."""
    versions = export_versions(export_base)
    if not versions:
        return None
    path = os.path.join(export_base, str(versions[-1]))
    try:
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        saved = [reader.get_tensor(f"model_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
                 for i in range(len(model.variables))]
    except (tf.errors.OpError, ValueError):  # incomplete, or from another model
        return None
    same = all(s.shape == tuple(v.shape) and np.array_equal(s, np.asarray(v))
               for s, v in zip(saved, model.variables))
    return path if same else None


def export_model_dir(model_dir: str, export_base: str | None = None) -> str:
    """Exports the final model of a finished run; returns the new version's path.

    export_base defaults to MODEL_DIR/export.
    """
    config = Config.load(os.path.join(model_dir, CONFIG_FILE)).validate()
    model = load_finished_model(model_dir)
    return export_saved_model(model, config, export_base or os.path.join(model_dir, EXPORT_DIR))


if __name__ == "__main__":  # the old spelling, `python -m tf_autoencoder.export`
    import sys

    from .cli import main

    sys.exit(main(command="export", prog="python -m tf_autoencoder.export"))
