"""The export formats, in one table, and the signatures every format carries.

An export version folder (MODEL_DIR/export/<version>/) always holds the SavedModel;
`export --format` adds the others, converted from it. Each row names what the format
writes, what runs it, the extra that installs its converter and runtime, and where its
code is: `convert` writes its files into a version folder, `check` runs them in their
runtime against the SavedModel (ConversionError if they differ), `load` opens them for
`predict` and `embeddings` as a loading.Codec.

Plain data, importable without TensorFlow or numpy: the command line builds its choices
and help from it. The code is named as "module:function" in this package and imported
only when used. Adding a format: a row here and a module with its convert, check and
load (tflite.py and onnx.py are the examples).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from ..errors import ConfigError, ConversionError, MissingExtra  # noqa: F401  (ConversionError: for callers)
from ..model_dir import EXPORT_DIR, SAVED_MODEL_FILE, find_saved_model

# Every format's signatures: name -> (input name, output names). All NHWC float32 with a
# dynamic batch: images (batch, H, W, C) in [0, 1], codes (batch, h, w, k) or (batch, k);
# score gives each image's score (batch,), whether it is above the threshold calibrated
# after training (batch,) bool, a constant of the export, and its anomaly map
# (batch, H, W) float32: where the image and its reconstruction disagree (model/maps.py,
# the run's --anomaly_map and --anomaly_map_sigma, built into the graph).
SIGNATURES = {"serving_default": ("images", ("reconstructions",)),
              "encode": ("images", ("codes",)),
              "decode": ("codes", ("reconstructions",)),
              "score": ("images", ("scores", "is_anomalous", "anomaly_maps"))}
# The SavedModel's alone: the same three functions on a batch of encoded image files
# (batch,) string: PNG, JPEG, GIF or BMP bytes, prepared inside the graph as training
# prepared them (preparation.prepare_image), so a client needs no code of ours.
BYTES_SIGNATURES = {"reconstruct_bytes": ("image_bytes", ("reconstructions",)),
                    "encode_bytes": ("image_bytes", ("codes",)),
                    "score_bytes": ("image_bytes", ("scores", "is_anomalous", "anomaly_maps"))}


@dataclass(frozen=True)
class Format:
    name: str                   # `export --format NAME`
    files: tuple[str, ...]      # what it writes into a version; `predict` takes the first
    runtime: str                # what runs it
    given_as: str               # how `predict MODEL` takes it (for the help)
    suffix: str | None = None   # a file `predict` takes by this suffix; None: a folder
    extra: str | None = None    # the pip extra (setup.cfg) that installs what it needs
    export_needs: tuple[str, ...] = ()  # modules that convert and check it
    run_needs: tuple[str, ...] = ()     # modules that run it
    convert: str = ""           # (tf.Module, version folder) -> None: writes `files`
    check: str | None = None    # (tf.Module, version folder) -> None, or ConversionError
    load: str = ""              # (path, batch_size) -> loading.Codec

    def function(self, column: str):
        """The function a column names, imported now."""
        module, name = getattr(self, column).split(":")
        return getattr(importlib.import_module(module, __package__), name)

    def require(self, what: str, export: bool = False) -> list:
        """The modules it needs to run (to export: `export`), imported; MissingExtra,
        naming the extra, if one is missing. `what`: what needs them, for the message."""
        modules = []
        for name in self.export_needs if export else self.run_needs:
            try:
                modules.append(importlib.import_module(name))
            except ImportError:
                raise MissingExtra(
                    f"{what} needs the [{self.extra}] extra ({name.split('.')[0]} is not "
                    f"installed): pip install 'tf-autoencoder[{self.extra}]'") from None
        return modules


FORMATS = {format.name: format for format in [
    # First: the others are converted from it, and checked against it.
    Format("saved_model", (SAVED_MODEL_FILE, "variables/"), "TensorFlow",
           f"a SavedModel folder, an {EXPORT_DIR}/ folder or a model_dir (its newest version "
           "is used)",
           convert=".export:write_saved_model", load=".loading:load_saved_model"),
    # The TFLite converter comes with TensorFlow; LiteRT runs it.
    Format("tflite", ("model.tflite",), "LiteRT", "a .tflite file", suffix=".tflite",
           extra="lite", export_needs=("ai_edge_litert.interpreter",),
           run_needs=("ai_edge_litert.interpreter",),
           convert=".tflite:convert", check=".tflite:check", load=".tflite:load"),
    # One file per signature, in SIGNATURES' order.
    Format("onnx", tuple(f"{signature}.onnx" for signature in SIGNATURES), "ONNX Runtime",
           "an exported serving_default.onnx", suffix=".onnx",
           extra="onnx", export_needs=("tf2onnx", "onnx", "onnxruntime"),
           run_needs=("onnxruntime",),
           convert=".onnx:convert", check=".onnx:check", load=".onnx:load"),
]}
SAVED_MODEL = FORMATS["saved_model"]


def require(name: str, what: str) -> list:
    """What exporting the format `name` needs, imported (Format.require)."""
    return FORMATS[name].require(what, export=True)


def format_of(path: str) -> Format:
    """The format of a model given to `predict` or `embeddings`: a file by its suffix,
    a folder is a SavedModel (or holds one). ConfigError for another file."""
    if not os.path.isfile(path):
        return SAVED_MODEL
    for format in FORMATS.values():
        if format.suffix and path.endswith(format.suffix):
            return format
    suffixes = [f"{'an' if f.suffix[1] in 'aeiou' else 'a'} {f.suffix}"
                for f in FORMATS.values() if f.suffix]
    raise ConfigError(f"{path} is a file but neither {' nor '.join(suffixes)} model: give one of "
                      f"those, a model_dir, its {EXPORT_DIR}/ folder or one "
                      f"{EXPORT_DIR}/<version>/ folder")


def find_model(path: str) -> str:
    """The model `path` names: a file of a format, as it is; a folder, the SavedModel to
    load (model_dir.find_saved_model). ConfigError saying what is missing."""
    return path if format_of(path).suffix else find_saved_model(path)
