"""What the formats run outside TensorFlow share: the check of a converted model against
the SavedModel it came from, and a Codec over a runtime's model.

A runtime's model (tflite.TFLiteModel, onnx.OnnxModel) has `runtime` (its name),
`signatures` (name -> ([input names], [output names])), `input_shape(signature)` (-1 for
the dynamic batch) and `run(signature, inputs)` (-> {output name: array}).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConversionError, ModelError
from .export import signature_functions
from .formats import SIGNATURES
from .loading import Codec, batched, missing

TOLERANCE = 1e-5
CHECK_BATCHES = (1, 3)  # batch 1, and an odd batch that is not the one a model was traced at


def first_line(error: Exception) -> str:
    """A converter's or runtime's error in one line (theirs are often pages long)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:  # in the export's temporary folder, synced with it
        f.write(data)


def check_inputs(image_shape) -> np.ndarray:
    """Fixed images in [0, 1]: the same for every export, so a failure can be repeated."""
    return np.random.default_rng(0).random((max(CHECK_BATCHES), *image_shape), np.float32)


def mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    """Why `got` is not `want` within TOLERANCE (relative to want's scale when above 1),
    or None."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)  # bool verdicts too
    if got.shape != want.shape:
        return f"shape {got.shape} instead of {want.shape}"
    if not np.all(np.isfinite(got)):
        return f"{np.size(got) - np.count_nonzero(np.isfinite(got))} values not finite (NaN or inf)"
    error = float(np.max(np.abs(got - want), initial=0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0)))
    return None if error <= TOLERANCE * scale else f"differs by up to {error:.3g}"


def check(model, module, name: str) -> None:
    """Runs each signature of the runtime's `model` at batch 1 and 3 and compares with
    `module`'s (the SavedModel's functions); ConversionError if any differ. `name`: the
    files, for the message."""
    images = check_inputs(module.encode.input_signature[0].shape[1:])
    (codes_name,) = SIGNATURES["encode"][1]
    codes = module.encode(images)[codes_name].numpy()
    inputs = {"serving_default": images, "encode": images, "decode": codes, "score": images}
    functions = signature_functions(module)
    for signature, (name_in, names_out) in SIGNATURES.items():
        outputs = functions[signature](inputs[signature])
        if not has_signature(model, signature):
            raise ConversionError(f"{name} has no {signature} signature from '{name_in}' to "
                                  f"{', '.join(map(repr, names_out))} in {model.runtime}")
        for batch in CHECK_BATCHES:
            try:
                got = model.run(signature, inputs[signature][:batch])
            except Exception as e:  # the runtime's own errors (a shape it cannot run)
                raise ConversionError(f"{name}: {signature} fails in {model.runtime} at batch "
                                      f"{batch}: {first_line(e)}") from None
            for name_out in names_out:
                wrong = mismatch(got[name_out], np.asarray(outputs[name_out])[:batch])
                if wrong:
                    what = signature if len(names_out) == 1 else f"{signature}'s {name_out}"
                    raise ConversionError(
                        f"{name}: {what} in {model.runtime} at batch {batch} is not what the "
                        f"SavedModel computes ({wrong})")


def has_signature(model, signature: str) -> bool:
    """Whether `model` has `signature` with the inputs and outputs SIGNATURES names."""
    name_in, names_out = SIGNATURES[signature]
    inputs, outputs = model.signatures.get(signature, ([], []))
    return list(inputs) == [name_in] and sorted(outputs) == sorted(names_out)


def codec(model, path: str, batch_size: int, no_encode: str | None,
          no_score: str | None = None) -> Codec:
    """A Codec over a runtime's `model` (loaded from `path`) whose serving_default was
    checked. `no_encode`, `no_score`: the messages when there is no encode, no score
    signature."""
    shape = tuple(model.input_shape("serving_default"))
    if len(shape) != 4 or min(shape[1:]) < 1:
        raise ModelError(f"{path} takes {shape}, not (batch, H, W, C) images of one size")

    def encode(images):
        if no_encode:
            raise ModelError(no_encode)
        (codes_name,) = SIGNATURES["encode"][1]
        codes = model.run("encode", images)[codes_name]
        return codes.reshape(len(codes), -1)  # NHWC, as the SavedModel's

    def score(images):
        outputs = model.run("score", images)
        return tuple(outputs[name] for name in SIGNATURES["score"][1])

    (reconstructions,) = SIGNATURES["serving_default"][1]
    return Codec(batched(encode, batch_size),
                 batched(lambda images: model.run("serving_default", images)[reconstructions],
                         batch_size),
                 shape[1:], model.runtime,
                 missing(no_score) if no_score else batched(score, batch_size))
