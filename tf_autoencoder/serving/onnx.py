"""ONNX: one model per signature (serving_default.onnx, encode.onnx, decode.onnx, score.onnx),
converted by tf2onnx and run by ONNX Runtime. Its row in formats.FORMATS names the files
and the extra ([onnx]: tf2onnx, onnx, onnxruntime)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConversionError, ModelError
from . import runtimes
from .export import signature_functions
from .formats import FORMATS, SIGNATURES
from .loading import Codec

ONNX = FORMATS["onnx"]
FILES = dict(zip(SIGNATURES, ONNX.files))  # signature -> its file
# Supported by tf2onnx 1.17 and by every ONNX Runtime of the last years.
OPSET = 17
BATCH_AXIS = "batch"


class OnnxModel:
    """ONNX models, one per signature (`paths`: signature -> file), run by ONNX Runtime
    on the CPU. A runtime's model, as runtimes.py describes."""

    runtime = ONNX.runtime

    def __init__(self, paths: dict[str, str], intra_op_threads: int | None = None):
        names = ", ".join(map(os.path.basename, paths.values()))
        (ort,) = ONNX.require(f"running {names}")
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
                                      f"{runtimes.first_line(e)}") from None
        self.signatures = {key: ([i.name for i in session.get_inputs()],
                                 [o.name for o in session.get_outputs()])
                           for key, session in self.sessions.items()}

    def input_shape(self, signature: str) -> tuple:
        """The input's shape, -1 for the dynamic batch."""
        (model_input,) = self.sessions[signature].get_inputs()
        return tuple(d if isinstance(d, int) else -1 for d in model_input.shape)

    def run(self, signature: str, inputs: np.ndarray) -> dict:
        name_in, names_out = SIGNATURES[signature]
        outputs = self.sessions[signature].run(
            list(names_out), {name_in: np.asarray(inputs, np.float32)})
        return dict(zip(names_out, outputs))


def onnx_model(function):
    """One signature's tf.function (with its input_signature) as an ONNX ModelProto whose
    batch axis is named BATCH_AXIS."""
    tf2onnx, _, _ = ONNX.require("--format onnx", export=True)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                             opset=OPSET)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    return proto


def convert(module, folder: str) -> None:
    """Writes one .onnx per signature of `module` (export.serving_module) into `folder`."""
    for signature, function in signature_functions(module).items():
        try:
            proto = onnx_model(function)
        except Exception as e:  # tf2onnx raises whatever its handlers raise
            raise ConversionError(f"tf2onnx failed on {signature}: "
                                  f"{runtimes.first_line(e)}") from None
        runtimes.write_file(os.path.join(folder, FILES[signature]), proto.SerializeToString())


def check(module, folder: str) -> None:
    model = OnnxModel({signature: os.path.join(folder, name) for signature, name in FILES.items()})
    runtimes.check(model, module, ", ".join(FILES.values()))


def load(path: str, batch_size: int = 256) -> Codec:
    """An exported serving_default.onnx (images -> reconstructions), run by ONNX Runtime;
    the encode.onnx and score.onnx beside it, if there, give the codes and the scores."""
    paths = {"serving_default": path}
    for signature in ("encode", "score"):
        beside = os.path.join(os.path.dirname(path), FILES[signature])
        if os.path.isfile(beside):
            paths[signature] = beside
    try:
        model = OnnxModel(paths)
    except ConversionError as e:
        raise ModelError(str(e)) from None
    if not runtimes.has_signature(model, "serving_default"):
        raise ModelError(f"{path} is not a model from 'images' to 'reconstructions': give the "
                         f"{FILES['serving_default']} of an export (`tf-autoencoder export "
                         "MODEL_DIR --format onnx`)")
    no_encode = (None if "encode" in paths
                 else f"there is no {FILES['encode']} beside {path}: export the model_dir with "
                      "`tf-autoencoder export MODEL_DIR --format onnx`")
    advice = "export the model_dir with `tf-autoencoder export MODEL_DIR --format onnx`"
    no_score = (f"there is no {FILES['score']} beside {path} (it was exported before anomaly "
                f"scores): {advice}" if "score" not in paths
                else None if runtimes.has_signature(model, "score")
                else f"{FILES['score']} beside {path} gives no anomaly maps (it was exported "
                     f"before them): {advice}")
    return runtimes.codec(model, path, batch_size, no_encode, no_score)
