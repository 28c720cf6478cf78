"""TFLite and ONNX exports: parity with the Keras model in their own runtimes (a fresh
process that imports neither tf_autoencoder nor TensorFlow), exports that fail whole
when a conversion is wrong, predict on every format, and the missing extras."""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import copy_run, error_lines, keras_outputs, reference_anomaly_maps, run_python
from tf_autoencoder import Config, build_autoencoder
from tf_autoencoder.serving import formats, onnx, tflite
from tf_autoencoder.cli import main
from tf_autoencoder.serving.export import export_saved_model, serving_module
from tf_autoencoder.model_dir import export_versions, load_finished_run
from tf_autoencoder.model.models import serving_twin
from tf_autoencoder.data.sources import load_mnist_sample

SIGNATURES = {"serving_default": ("images", ["reconstructions"]), "encode": ("images", ["codes"]),
              "decode": ("codes", ["reconstructions"]),
              "score": ("images", ["anomaly_maps", "is_anomalous", "scores"])}
ONNX_FILES = ["serving_default.onnx", "encode.onnx", "decode.onnx", "score.onnx"]
ODD_BATCH = 7

# A fresh interpreter that imports only numpy and the two runtimes. For each export folder
# of its arguments (with inputs.npz beside it), runs every signature of model.tflite in
# LiteRT and of the four .onnx files in ONNX Runtime, at batch 1 and at the full (odd)
# batch, saves the outputs to outputs.npz (score's as "<runtime> score <output> <batch>")
# and prints what it saw (a line per folder).
FRESH_RUN = r"""
import json, os, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
import onnxruntime as ort

IO = {"serving_default": ("images", ["reconstructions"]), "encode": ("images", ["codes"]),
      "decode": ("codes", ["reconstructions"]),
      "score": ("images", ["scores", "is_anomalous", "anomaly_maps"])}
for folder, inputs_path, outputs_path in zip(*[iter(sys.argv[1:])] * 3):
    inputs, outputs, seen = dict(np.load(inputs_path)), {}, {}
    lite = Interpreter(model_path=os.path.join(folder, "model.tflite"))
    seen["tflite_signatures"] = lite.get_signature_list()
    for signature, (name_in, names_out) in IO.items():
        runner = lite.get_signature_runner(signature)
        seen[f"tflite {signature} shape"] = runner.get_input_details()[name_in]["shape_signature"].tolist()
        session = ort.InferenceSession(os.path.join(folder, signature + ".onnx"),
                                       providers=["CPUExecutionProvider"])
        seen[f"onnx {signature}"] = [[(i.name, i.shape) for i in session.get_inputs()],
                                     [(o.name, o.shape) for o in session.get_outputs()]]
        x = inputs[name_in]
        for batch in (1, len(x), 1):  # back to 1: the runner resizes down as well as up
            lite_out = runner(**{name_in: x[:batch]})
            onnx_out = dict(zip(names_out, session.run(names_out, {name_in: x[:batch]})))
            for name_out in names_out:
                key = signature if len(names_out) == 1 else f"{signature} {name_out}"
                outputs[f"tflite {key} {batch}"] = lite_out[name_out]
                outputs[f"onnx {key} {batch}"] = onnx_out[name_out]
    np.savez(outputs_path, **outputs)
    seen["imported"] = sorted(m for m in sys.modules
                              if m.split(".")[0] in ("tf_autoencoder", "tensorflow", "keras"))
    print(json.dumps(seen))
"""


def run_fresh(jobs, cwd):
    """`jobs`: (export folder, inputs dict, tmp folder); returns (seen, outputs) per job,
    all from one fresh process."""
    args = []
    for folder, inputs, tmp in jobs:
        np.savez(tmp / "inputs.npz", **inputs)
        args += [folder, str(tmp / "inputs.npz"), str(tmp / "outputs.npz")]
    result = subprocess.run([sys.executable, "-c", FRESH_RUN, *args], capture_output=True,
                            text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()[-len(jobs):]
    return [(json.loads(line), dict(np.load(tmp / "outputs.npz")))
            for line, (_, _, tmp) in zip(printed, jobs)]


def perturbed(config):
    """An untrained model of `config` with weights moved off their initial values (zero
    biases would hide a bias that a conversion drops)."""
    model = build_autoencoder(config)
    rng = np.random.default_rng(5)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


# Built in the test process: what the two trained runs below do not cover.
BUILT = {
    # Odd sizes (13x11: the encoder pads, the decoder crops), float32.
    "conv NHWC float32 13x11x1": Config(image_shape=[13, 11, 1], num_filters=[4, 4],
                                         precision="float32"),
    # Three channels, non-square: a flatten in the wrong order shows.
    "fully_connected NCHW float32 12x10x3": Config(
        model="fully_connected", hidden_units=[16, 8], image_shape=[12, 10, 3],
        data_format="NCHW", precision="float32"),
    # The VAE with the other down- and upsampling layers, trained in bfloat16.
    "variational NCHW mixed_bfloat16 12x12x1": Config(
        model="variational", num_filters=[4, 4], image_shape=[12, 12, 1], data_format="NCHW",
        downsample="strided", upsample="resize", precision="mixed_bfloat16"),
    # The linear path (its start does not matter here: perturbed): NCHW colour, so a
    # flatten or reshape in the wrong order shows.
    "linear path NCHW float32 12x10x3": Config(
        num_filters=[4, 4], downsample="strided", code_size=5, linear_path="pca",
        image_shape=[12, 10, 3], data_format="NCHW", precision="float32"),
    # The strided tutorial model: a flat code through a map-sized conv, no output layer.
    "strided tutorial NCHW mixed_bfloat16 28x28x1": Config(
        num_filters=[16, 32], downsample="strided", convs_per_block=0, code_size=12,
        output_layer=False, image_shape=[28, 28, 1], data_format="NCHW",
        precision="mixed_bfloat16"),
    # 2x2 transposed upsampling, 5x5 kernels, one conv per block, RGB of odd size; its
    # anomaly maps are SSIM's, smoothed less.
    "pooled tutorial-like NHWC float32 20x18x3": Config(
        num_filters=[6, 4], convs_per_block=1, kernel_size=5, upsample="transpose_2x2",
        output_layer=False, image_shape=[20, 18, 3], precision="float32",
        anomaly_map="ssim", anomaly_map_sigma=2.0),
    # A VAE with a two-value code.
    "variational code_size 2 NHWC float32 12x12x1": Config(
        model="variational", num_filters=[4, 4], code_size=2, image_shape=[12, 12, 1],
        precision="float32"),
    # Scored by the code's distance: a VAE's mean code, NCHW (flattened as NHWC), of odd size;
    # its maps stay the reconstruction error's.
    "variational code-scored NCHW float32 13x11x1": Config(
        model="variational", num_filters=[4, 4], image_shape=[13, 11, 1], data_format="NCHW",
        precision="float32", anomaly_score="code"),
}


@pytest.fixture(scope="module")
def nhwc_export(trained_run, tmp_path_factory):
    """conftest's NHWC run (precision auto), copied, then `python -m tf_autoencoder export
    --format tflite --format onnx` on it (version 2). Returns (model_dir, the process)."""
    model_dir = copy_run(trained_run[0], tmp_path_factory.mktemp("nhwc") / "run")
    return model_dir, run_python("-m", "tf_autoencoder", "export", model_dir,
                                 "--format", "tflite", "--format", "onnx")


@pytest.fixture(scope="module")
def parity(nhwc_export, nchw_idx_run, tmp_path_factory):
    """Per model: (what the fresh process saw, its outputs, the Keras outputs, the inputs).
    Two trained runs exported by the command line (NHWC; NCHW in mixed_bfloat16), their
    score signatures carrying their threshold.json, and the BUILT models exported in this
    process with a threshold between the Keras scores of their third and fourth image (a
    code-scored one with the Gaussian of the codes of 64 other random images)."""
    from tf_autoencoder.run.anomaly import code_gaussian, image_codes

    digits = load_mnist_sample().test.images[:4].astype(np.float32) / 255
    noise = np.random.default_rng(0).random((ODD_BATCH - len(digits), 28, 28, 1), np.float32)
    models = {}
    nchw_dir = copy_run(nchw_idx_run[0], tmp_path_factory.mktemp("nchw") / "run")
    assert main(["export", nchw_dir, "--format", "tflite,onnx"]) == 0
    for name, model_dir in [("trained NHWC", nhwc_export[0]), ("trained NCHW mixed_bfloat16", nchw_dir)]:
        config = load_finished_run(model_dir)
        model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
        with open(os.path.join(model_dir, "threshold.json")) as f:
            threshold = json.load(f)["threshold"]
        models[name] = (os.path.join(model_dir, "export", "2"), model, config,
                        np.concatenate([digits, noise]), threshold, None)
    for name, config in BUILT.items():
        config = config.validate()
        model = perturbed(config)
        base = str(tmp_path_factory.mktemp("built") / "export")
        images = np.random.default_rng(1).random((ODD_BATCH, *config.image_shape), np.float32)
        gaussian = None
        if config.anomaly_score == "code":
            normal = np.random.default_rng(2).integers(0, 256, (64, *config.image_shape), np.uint8)
            gaussian = code_gaussian(image_codes(model, normal, config.data_format))
        scores = np.sort(keras_scores(keras_outputs(model, config, images), images, gaussian))
        threshold = float(scores[2:4].mean())
        models[name] = (export_saved_model(model, config, base, ("tflite", "onnx"), threshold,
                                           gaussian), model, config, images, threshold, gaussian)
    jobs, expected = [], {}
    for name, (folder, model, config, images, threshold, gaussian) in models.items():
        expected[name] = keras_outputs(model, config, images)
        expected[name]["scores"] = keras_scores(expected[name], images, gaussian)
        expected[name]["threshold"] = threshold
        expected[name]["anomaly_maps"] = reference_anomaly_maps(
            images, expected[name]["reconstructions"], config.anomaly_map,
            config.anomaly_map_sigma)
        expected[name]["anomaly_map"] = config.anomaly_map
        inputs = {"images": images, "codes": expected[name]["codes"]}
        jobs.append((folder, inputs, tmp_path_factory.mktemp("fresh")))
    results = run_fresh(jobs, cwd=tmp_path_factory.mktemp("cwd"))
    return {name: (seen, got, expected[name], job[1])
            for name, (seen, got), job in zip(models, results, jobs)}


MODELS = ["trained NHWC", "trained NCHW mixed_bfloat16", *BUILT]


def keras_scores(outputs, images, gaussian=None):
    """Each image's mean squared error against keras_outputs' reconstruction, or with
    a `gaussian` the Mahalanobis distance of its code (NHWC, flattened) to it."""
    if gaussian is None:
        return np.mean(np.square(images - outputs["reconstructions"]), axis=(1, 2, 3))
    centred = outputs["codes"].reshape(len(images), -1) - gaussian["mean"]
    return np.sqrt(np.einsum("ij,jk,ik->i", centred, gaussian["precision"], centred))


def test_the_export_command_writes_every_format_into_one_version_quietly(nhwc_export):
    model_dir, export = nhwc_export
    assert export.returncode == 0, export.stderr
    version = os.path.join(model_dir, "export", "2")
    # Each file added to the version, named.
    assert export.stdout.splitlines() == [f"Exported {version}"] + [
        f"Wrote {os.path.join(version, name)}" for name in ["model.tflite", *ONNX_FILES]]
    assert error_lines(export.stderr) == []  # no converter or runtime chatter
    assert export_versions(os.path.join(model_dir, "export")) == [1, 2]
    assert sorted(os.listdir(version)) == sorted(
        ["assets", "fingerprint.pb", "saved_model.pb", "variables", "model.tflite", *ONNX_FILES])


@pytest.mark.parametrize("name", MODELS)
def test_each_format_matches_keras_in_its_own_runtime(name, parity):
    """Catches a conversion that computes NaN (the weights it reads are not the model's),
    drops a signature, fixes the batch, or lays out an NCHW model's pixels or codes
    wrongly; batch 1 after the odd batch catches a runner that does not resize back."""
    seen, got, expected, inputs = parity[name]
    assert seen["imported"] == []
    want = {"serving_default": expected["reconstructions"], "encode": expected["codes"],
            "decode": expected["decoded"]}
    for runtime in ("tflite", "onnx"):
        for signature, outputs in want.items():
            # Reconstructions are in [0, 1]; codes are compared at their own scale.
            atol = 1e-5 * max(1.0, float(np.abs(outputs).max()))
            for batch in (1, ODD_BATCH):
                np.testing.assert_allclose(got[f"{runtime} {signature} {batch}"], outputs[:batch],
                                           atol=atol, rtol=0, err_msg=f"{runtime} {signature} {batch}")
    assert 0 < want["serving_default"].std()  # the reference itself is not constant


@pytest.mark.parametrize("name", MODELS)
def test_each_format_scores_and_flags_as_keras_with_the_threshold_it_carries(name, parity):
    """Catches a score signature that averages other pixels, loses its threshold (a
    variable the converter drops) or compares the wrong way; the built models' thresholds
    split their images, so a verdict that is constant fails."""
    seen, got, expected, inputs = parity[name]
    scores, threshold = expected["scores"], expected["threshold"]
    clear = np.abs(scores - threshold) > 1e-5  # verdicts at the threshold itself may differ
    for runtime in ("tflite", "onnx"):
        for batch in (1, ODD_BATCH):
            np.testing.assert_allclose(got[f"{runtime} score scores {batch}"], scores[:batch],
                                       atol=1e-6, rtol=1e-5, err_msg=f"{runtime} {batch}")
            flags = got[f"{runtime} score is_anomalous {batch}"]
            assert flags.dtype == bool
            np.testing.assert_array_equal(flags[clear[:batch]],
                                          (scores > threshold)[:batch][clear[:batch]])
    if name in BUILT:
        assert 0 < (scores > threshold).sum() < len(scores)


@pytest.mark.parametrize("name", MODELS)
def test_each_format_maps_each_image_as_the_numpy_reference(name, parity):
    """The score signature's anomaly maps, in LiteRT and ONNX Runtime, against NumPy and
    scipy (and scikit-image's SSIM) on the Keras reconstructions. Catches a map the
    converter breaks (a gather or depthwise convolution computed otherwise), maps of an
    NCHW model laid out as NCHW, and a code-scored run whose map is not the
    reconstruction's."""
    seen, got, expected, inputs = parity[name]
    maps = expected["anomaly_maps"]
    assert maps.std() > 0
    # SSIM's variances in float32 against float64 (tests/test_maps.py)
    atol = 1e-4 if expected["anomaly_map"] == "ssim" else 1e-6
    for runtime in ("tflite", "onnx"):
        for batch in (1, ODD_BATCH):
            np.testing.assert_allclose(got[f"{runtime} score anomaly_maps {batch}"], maps[:batch],
                                       atol=atol, rtol=1e-4,
                                       err_msg=f"{runtime} {batch}")


@pytest.mark.parametrize("name", MODELS)
def test_each_format_has_the_four_signatures_with_a_dynamic_batch(name, parity):
    seen, _, expected, inputs = parity[name]
    image, code = list(inputs["images"].shape[1:]), list(expected["codes"].shape[1:])
    assert {signature: {"inputs": io["inputs"], "outputs": sorted(io["outputs"])}
            for signature, io in seen["tflite_signatures"].items()} == {
        signature: {"inputs": [name_in], "outputs": names_out}
        for signature, (name_in, names_out) in SIGNATURES.items()}
    shapes = {"images": image, "codes": code, "reconstructions": image, "scores": [],
              "is_anomalous": [], "anomaly_maps": image[:2]}
    for signature, (name_in, names_out) in SIGNATURES.items():
        assert seen[f"tflite {signature} shape"] == [-1, *shapes[name_in]]
        ins, outs = seen[f"onnx {signature}"]
        assert ins == [[name_in, ["batch", *shapes[name_in]]]]
        assert sorted(outs) == [[name_out, ["batch", *shapes[name_out]]] for name_out in names_out]


def test_tflite_converter_on_the_saved_model_alone_gives_four_working_signatures(tmp_path):
    """The user's route of the issue: TFLiteConverter.from_saved_model(export/N), with the
    tensor signatures' keys as docs/export-and-serving.md shows (the image-bytes ones
    decode files, which TFLite's builtin ops do not). Catches the two causes of its
    failure: a module attribute named `serve` (only serving_default came out) and
    tracked Keras variable wrappers (NaN)."""
    from ai_edge_litert.interpreter import Interpreter

    config = BUILT["conv NHWC float32 13x11x1"].validate()
    model = perturbed(config)
    path = export_saved_model(model, config, str(tmp_path / "export"))
    converter = tf.lite.TFLiteConverter.from_saved_model(
        path, signature_keys=["serving_default", "encode", "decode", "score"])
    interpreter = Interpreter(model_content=converter.convert())
    assert set(interpreter.get_signature_list()) == set(SIGNATURES)
    images = np.random.default_rng(2).random((3, 13, 11, 1), np.float32)
    got = interpreter.get_signature_runner("encode")(images=images)["codes"]
    np.testing.assert_allclose(got, keras_outputs(model, config, images)["codes"], atol=1e-5, rtol=0)


# --- a wrong conversion fails the whole export ----------------------------------------

@pytest.fixture
def small(tmp_path):
    config = Config(image_shape=[12, 12, 1], num_filters=[4], precision="float32").validate()
    return perturbed(config), config, str(tmp_path / "export")


def test_a_tflite_file_computing_nan_fails_the_export_and_writes_nothing(small, monkeypatch):
    """Catches an export that writes the converter's output without running it: here the
    converter's file reads NaN weights, as the issue's did."""
    model, config, base = small
    broken = perturbed(config)
    broken.set_weights([np.full_like(w, np.nan) for w in broken.get_weights()])
    other = str(os.path.join(os.path.dirname(base), "broken"))
    real = tflite.tflite_bytes
    monkeypatch.setattr(tflite, "tflite_bytes", lambda saved_model_dir: real(
        export_saved_model(broken, config, other)))
    with pytest.raises(formats.ConversionError, match=r"model.tflite: serving_default in LiteRT "
                       r"at batch 1 is not what the SavedModel computes \(144 values not finite"):
        export_saved_model(model, config, base, ("tflite",))
    assert os.listdir(base) == []  # neither a version nor a temporary folder


def test_a_converter_error_is_one_line_and_writes_nothing(small, monkeypatch):
    model, config, base = small

    def failing(saved_model_dir):
        raise RuntimeError("Could not translate MLIR to FlatBuffer.\n<unknown>:0: error: ...")

    monkeypatch.setattr(tflite, "tflite_bytes", failing)
    with pytest.raises(formats.ConversionError) as error:
        export_saved_model(model, config, base, ("saved_model", "tflite"))
    assert str(error.value) == ("the TFLite converter failed: Could not translate MLIR to "
                                "FlatBuffer. (nothing exported)")
    assert os.listdir(base) == []


def test_onnx_models_of_other_weights_fail_the_export_command_in_one_line(
        trained_run, tmp_path, monkeypatch, capsys):
    """Catches an export that trusts tf2onnx's output unchecked: here it converts a model
    of the same shapes with other weights. The command says so in one line, exits 1, and
    the run keeps only its version 1."""
    model_dir = copy_run(trained_run[0], tmp_path / "run")
    config = load_finished_run(model_dir)
    other = serving_module(serving_twin(perturbed(config), config))
    real = onnx.onnx_model
    monkeypatch.setattr(onnx, "onnx_model", lambda function: real(
        getattr(other, function.python_function.__name__)))
    assert main(["export", model_dir, "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.fullmatch(r"tf-autoencoder export: error: serving_default.onnx, encode.onnx, "
                        r"decode.onnx, score.onnx: serving_default in ONNX Runtime at batch 1 is not what "
                        r"the SavedModel computes \(differs by up to [\d.e-]+\) "
                        r"\(nothing exported\)\n", err), err
    assert os.listdir(os.path.join(model_dir, "export")) == ["1"]


# --- predict on every format ------------------------------------------------------------

def test_predict_gives_the_same_scores_and_pictures_in_every_runtime(nhwc_export, tmp_path,
                                                                     capsys):
    """Catches a loader that picks the wrong runtime, or feeds it other pixels (scores
    would differ), and one that writes other reconstructions."""
    model_dir = nhwc_export[0]
    digit = load_mnist_sample().test.images[0]
    for name, image in [("digit.png", digit), ("inverted.png", 255 - digit)]:
        (tmp_path / name).write_bytes(tf.io.encode_png(image).numpy())
    images = [str(tmp_path / "digit.png"), str(tmp_path / "inverted.png")]
    version = os.path.join(model_dir, "export", "2")
    runs = {"TensorFlow": model_dir, "LiteRT": os.path.join(version, "model.tflite"),
            "ONNX Runtime": os.path.join(version, "serving_default.onnx")}
    scores, pictures = {}, {}
    for runtime, model in runs.items():
        out = tmp_path / runtime
        assert main(["predict", model, *images, "--output_dir", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        shown = version if runtime == "TensorFlow" else model
        assert lines[0] == f"Model: {shown} ({runtime}): greyscale images 28 wide x 28 high"
        scores[runtime] = [float(re.search(r": score (\d\.\d{6}), (?:normal|anomalous) -> ",
                                           line)[1]) for line in lines[1:-2]]
        pictures[runtime] = [tf.io.decode_png((out / name).read_bytes()).numpy().astype(int)
                             for name in ["digit_reconstruction.png", "inverted_reconstruction.png"]]
    reference = scores["TensorFlow"]
    assert reference[1] > 1.5 * reference[0]  # the inverted digit is the anomaly
    for runtime in ("LiteRT", "ONNX Runtime"):
        assert scores[runtime] == pytest.approx(reference, abs=2e-6), runtime
        for got, want in zip(pictures[runtime], pictures["TensorFlow"]):
            assert np.abs(got - want).max() <= 1, runtime  # rounding to 8 bits at most


def test_predict_on_an_onnx_model_that_is_not_serving_default_is_one_line(nhwc_export, capsys):
    encode = os.path.join(nhwc_export[0], "export", "2", "encode.onnx")
    assert main(["predict", encode, "x.png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a model from 'images' to 'reconstructions'" in err


def test_predict_on_another_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "model.h5").write_text("weights")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(tmp_path / "model.h5"), "x.png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a .tflite nor an .onnx model" in err, err


# --- extras and usage -------------------------------------------------------------------

def test_export_without_the_onnx_extra_says_which_to_install_and_writes_nothing(
        trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package gives
    export_dir = tmp_path / "export"
    assert main(["export", trained_run[0], "--export_dir", str(export_dir),
                 "--format", "tflite,onnx"]) == 1
    err = capsys.readouterr().err
    assert err == ("tf-autoencoder export: error: --format onnx needs the [onnx] extra "
                   "(onnxruntime is not installed): pip install 'tf-autoencoder[onnx]'\n")
    assert not export_dir.exists()


def test_predict_without_the_lite_extra_says_which_to_install(nhwc_export, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    path = os.path.join(nhwc_export[0], "export", "2", "model.tflite")
    assert main(["predict", path, "x.png"]) == 1
    assert capsys.readouterr().err == (
        "tf-autoencoder predict: error: running model.tflite needs the [lite] extra "
        "(ai_edge_litert is not installed): pip install 'tf-autoencoder[lite]'\n")


def test_an_unknown_format_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "--format", "tflite,coreml"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown format coreml" in err, err
