"""TFLite and ONNX: the export's signatures converted for LiteRT and ONNX Runtime, checked
in those runtimes, and run by them behind one small interface (`run(signature, inputs)`).

Files, next to the SavedModel in an export's version folder:
  model.tflite                                 the three signatures (LiteRT's signature runners)
  serving_default.onnx, encode.onnx, decode.onnx   one ONNX model per signature
Every signature takes and gives NHWC float32 with a dynamic batch axis, as the SavedModel.

The runtimes are optional extras, imported only when a format needs them:
[lite] (ai-edge-litert) and [onnx] (tf2onnx, onnx, onnxruntime).
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from ..errors import ConversionError, MissingExtra
from ..logs import stderr_without
from ..model_dir import ONNX_FILES, TFLITE_FILE

# signature -> (input name, output name), as in the SavedModel.
SIGNATURES = {"serving_default": ("images", "reconstructions"),
              "encode": ("images", "codes"),
              "decode": ("codes", "reconstructions")}
# Supported by tf2onnx 1.17 and by every ONNX Runtime of the last years.
ONNX_OPSET = 17
ONNX_BATCH_AXIS = "batch"

# What needs an extra -> the extra, and the modules it needs: exporting a format needs its
# converter and runtime (the TFLite converter comes with TensorFlow); running it, the runtime.
_EXTRAS = {"tflite": ("lite", ("ai_edge_litert.interpreter",)),
           "onnx": ("onnx", ("tf2onnx", "onnx", "onnxruntime")),
           "onnxruntime": ("onnx", ("onnxruntime",))}
# LiteRT's C++ code writes this once per process, the first time it runs a model.
_LITERT_NOTE = r"INFO: Created TensorFlow Lite XNNPACK delegate"




def require(need: str, what: str) -> list:
    """The modules that `need` (an _EXTRAS key) needs, imported; MissingExtra, naming the
    extra, if one is missing. `what`: what needs them, for the message."""
    extra, names = _EXTRAS[need]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise MissingExtra(f"{what} needs the [{extra}] extra ({name.split('.')[0]} is not "
                               f"installed): pip install 'tf-autoencoder[{extra}]'") from None
    return modules


# --- runtimes ---------------------------------------------------------------------------

class TFLiteModel:
    """A .tflite file's signatures, run by LiteRT's interpreter (XNNPACK on CPU). Each call
    resizes the input to its batch when the batch changes. `signatures`: name -> (input
    names, output names), as OnnxModel's."""

    runtime = "LiteRT"

    def __init__(self, path: str, num_threads: int | None = None):
        (interpreter,) = require("tflite", f"running {os.path.basename(path)}")
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

    def run(self, signature: str, inputs: np.ndarray) -> np.ndarray:
        name_in, name_out = SIGNATURES[signature]
        return self._runners[signature](**{name_in: np.asarray(inputs, np.float32)})[name_out]


class OnnxModel:
    """ONNX models, one per signature, run by ONNX Runtime on the CPU."""

    runtime = "ONNX Runtime"

    def __init__(self, paths: dict[str, str], intra_op_threads: int | None = None):
        names = ", ".join(map(os.path.basename, paths.values()))
        (ort,) = require("onnxruntime", f"running {names}")
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self.sessions = {}
        for signature, path in paths.items():
            try:
                self.sessions[signature] = ort.InferenceSession(
                    path, options, providers=["CPUExecutionProvider"])
            except Exception as e:  # ORT's own exception types; a file it cannot load
                raise ConversionError(f"ONNX Runtime cannot load {path}: "
                                      f"{_first_line(e)}") from None
        self.signatures = {key: ([i.name for i in session.get_inputs()],
                                 [o.name for o in session.get_outputs()])
                           for key, session in self.sessions.items()}

    def input_shape(self, signature: str) -> tuple:
        """The input's shape, -1 for the dynamic batch."""
        (model_input,) = self.sessions[signature].get_inputs()
        return tuple(d if isinstance(d, int) else -1 for d in model_input.shape)

    def run(self, signature: str, inputs: np.ndarray) -> np.ndarray:
        name_in, name_out = SIGNATURES[signature]
        return self.sessions[signature].run(
            [name_out], {name_in: np.asarray(inputs, np.float32)})[0]


# --- conversion -------------------------------------------------------------------------

def tflite_bytes(saved_model_dir: str) -> bytes:
    """The SavedModel's three signatures as one TFLite flatbuffer (float32, no quantisation)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=list(SIGNATURES))
    return converter.convert()


def onnx_model(function):
    """One signature's tf.function (with its input_signature) as an ONNX ModelProto whose
    batch axis is named ONNX_BATCH_AXIS."""
    tf2onnx, _, _ = require("onnx", "--format onnx")
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                             opset=ONNX_OPSET)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = ONNX_BATCH_AXIS
    return proto


def write_formats(module, saved_model_dir: str, formats) -> None:
    """Writes the TFLite and ONNX files that `formats` asks for into `saved_model_dir`
    (where `module`'s SavedModel was just saved), and checks each in its runtime against
    `module`. ConversionError when a converted model is wrong; MissingExtra when its
    converter or runtime is not installed."""
    if "tflite" in formats:
        require("tflite", "--format tflite")
        try:
            data = tflite_bytes(saved_model_dir)
        except Exception as e:  # the converter's errors are many pages of MLIR
            raise ConversionError(f"the TFLite converter failed: {_first_line(e)}") from None
        _write(os.path.join(saved_model_dir, TFLITE_FILE), data)
        check(TFLiteModel(os.path.join(saved_model_dir, TFLITE_FILE)), module, TFLITE_FILE)
    if "onnx" in formats:
        require("onnx", "--format onnx")
        functions = {"serving_default": module.reconstruct, "encode": module.encode,
                     "decode": module.decode}
        paths = {}
        for signature, function in functions.items():
            try:
                proto = onnx_model(function)
            except Exception as e:  # tf2onnx raises whatever its handlers raise
                raise ConversionError(f"tf2onnx failed on {signature}: {_first_line(e)}") from None
            paths[signature] = os.path.join(saved_model_dir, ONNX_FILES[signature])
            _write(paths[signature], proto.SerializeToString())
        check(OnnxModel(paths), module, ", ".join(ONNX_FILES.values()))


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:  # in the export's temporary folder, synced with it
        f.write(data)


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# --- the check --------------------------------------------------------------------------

TOLERANCE = 1e-5
CHECK_BATCHES = (1, 3)  # batch 1, and an odd batch that is not the one a model was traced at


def check_inputs(image_shape) -> np.ndarray:
    """Fixed images in [0, 1]: the same for every export, so a failure can be repeated."""
    return np.random.default_rng(0).random((max(CHECK_BATCHES), *image_shape), np.float32)


def mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    """Why `got` is not `want` within TOLERANCE (relative to want's scale when above 1),
    or None."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"shape {got.shape} instead of {want.shape}"
    if not np.all(np.isfinite(got)):
        return f"{np.size(got) - np.count_nonzero(np.isfinite(got))} values not finite (NaN or inf)"
    error = float(np.max(np.abs(got - want), initial=0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0)))
    return None if error <= TOLERANCE * scale else f"differs by up to {error:.3g}"


def check(model, module, name: str) -> None:
    """Runs each signature of `model` (a TFLiteModel or OnnxModel) at batch 1 and 3 and
    compares with `module`'s (the SavedModel's functions); ConversionError if any differ."""
    images = check_inputs(module.encode.input_signature[0].shape[1:])
    codes = module.encode(images)["codes"].numpy()
    expected = {"serving_default": (images, module.reconstruct(images)["reconstructions"]),
                "encode": (images, codes),
                "decode": (codes, module.decode(codes)["reconstructions"])}
    for signature, (inputs, outputs) in expected.items():
        name_in, name_out = SIGNATURES[signature]
        if model.signatures.get(signature) != ([name_in], [name_out]):
            raise ConversionError(f"{name} has no {signature} signature from '{name_in}' to "
                                  f"'{name_out}' in {model.runtime}")
        for batch in CHECK_BATCHES:
            try:
                got = model.run(signature, inputs[:batch])
            except Exception as e:  # the runtime's own errors (a shape it cannot run)
                raise ConversionError(f"{name}: {signature} fails in {model.runtime} at batch "
                                      f"{batch}: {_first_line(e)}") from None
            wrong = mismatch(got, np.asarray(outputs)[:batch])
            if wrong:
                raise ConversionError(
                    f"{name}: {signature} in {model.runtime} at batch {batch} is not what the "
                    f"SavedModel computes ({wrong})")
