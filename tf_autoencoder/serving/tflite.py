"""TFLite: the SavedModel's four signatures in one model.tflite, for LiteRT (the
successor of tf.lite.Interpreter). Its row in formats.FORMATS names the file and the
extra ([lite]: ai-edge-litert)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConversionError, ModelError
from ..logs import stderr_without
from . import runtimes
from .formats import FORMATS, SIGNATURES
from .loading import Codec

TFLITE = FORMATS["tflite"]
(FILE,) = TFLITE.files
# LiteRT's C++ code writes this once per process, the first time it runs a model.
_LITERT_NOTE = r"INFO: Created TensorFlow Lite XNNPACK delegate"


class TFLiteModel:
    """A .tflite file's signatures, run by LiteRT's interpreter (XNNPACK on CPU). Each call
    resizes the input to its batch when the batch changes. A runtime's model, as
    runtimes.py describes."""

    runtime = TFLITE.runtime

    def __init__(self, path: str, num_threads: int | None = None):
        (interpreter,) = TFLITE.require(f"running {os.path.basename(path)}")
        try:
            self.interpreter = interpreter.Interpreter(model_path=path, num_threads=num_threads)
        except ValueError as e:  # not a TFLite flatbuffer
            raise ConversionError(f"LiteRT cannot load {path}: {e}") from None
        self.signatures = {key: (value["inputs"], value["outputs"])
                           for key, value in self.interpreter.get_signature_list().items()}
        self._runners = {key: self.interpreter.get_signature_runner(key)
                         for key in self.signatures}
        if "serving_default" in self._runners:  # the first run prints LiteRT's note: not here
            shape = [1, *self.input_shape("serving_default")[1:]]
            with stderr_without(_LITERT_NOTE):
                self.run("serving_default", np.zeros(shape, np.float32))

    def input_shape(self, signature: str) -> tuple:
        """The input's shape, -1 for the dynamic batch."""
        name = SIGNATURES[signature][0]
        details = self._runners[signature].get_input_details()[name]
        return tuple(int(d) for d in details["shape_signature"])

    def run(self, signature: str, inputs: np.ndarray) -> dict:
        name_in, _ = SIGNATURES[signature]
        return self._runners[signature](**{name_in: np.asarray(inputs, np.float32)})


def tflite_bytes(saved_model_dir: str) -> bytes:
    """The SavedModel's signatures as one TFLite flatbuffer (float32, no quantisation)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=list(SIGNATURES))
    return converter.convert()


def convert(module, folder: str) -> None:
    """Writes model.tflite into `folder`, converted from the SavedModel saved there."""
    try:
        data = tflite_bytes(folder)
    except Exception as e:  # the converter's errors are many pages of MLIR
        raise ConversionError(f"the TFLite converter failed: {runtimes.first_line(e)}") from None
    runtimes.write_file(os.path.join(folder, FILE), data)


def check(module, folder: str) -> None:
    runtimes.check(TFLiteModel(os.path.join(folder, FILE)), module, FILE)


def load(path: str, batch_size: int = 256) -> Codec:
    """A model.tflite exported by this package: its `serving_default` and `encode`
    signatures, run by LiteRT."""
    try:
        model = TFLiteModel(path)
    except ConversionError as e:
        raise ModelError(str(e)) from None
    advice = "export the model_dir with `tf-autoencoder export MODEL_DIR --format tflite`"
    if not runtimes.has_signature(model, "serving_default"):
        raise ModelError(f"{path} has no serving_default signature from 'images' to "
                         f"'reconstructions': {advice}")
    no_encode = (None if runtimes.has_signature(model, "encode")
                 else f"{path} has no encode signature from 'images' to 'codes': {advice}")
    no_score = (None if runtimes.has_signature(model, "score")
                else f"{path} has no score signature with anomaly maps (it was exported before "
                     f"anomaly scores or maps): {advice}")
    return runtimes.codec(model, path, batch_size, no_encode, no_score)
