"""SavedModel export: signatures, loading in a fresh process, parity with Keras, atomic
versions, and the export command line."""
import dataclasses
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
from tf_autoencoder.errors import ModelError, WriteError
from tf_autoencoder.serving.export import export_holding, export_saved_model
from tf_autoencoder.serving.loading import load_finished_codec, load_saved_model
from tf_autoencoder.model.models import Autoencoder, copy_weights, float32_twin, named_weights
from tf_autoencoder.model_dir import export_versions, find_saved_model, load_finished_run
from tf_autoencoder.data.sources import load_mnist_sample

# Runs in a fresh interpreter that never imports tf_autoencoder: for each (SavedModel,
# inputs, outputs) triple of its arguments, loads the SavedModel with plain TensorFlow,
# calls its signatures (score_bytes on PNG files it encodes), saves the outputs, prints the
# signatures (a line each).
FRESH_LOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf

args = sys.argv[1:]
for saved_model_dir, inputs, outputs in zip(args[0::3], args[1::3], args[2::3]):
    loaded = tf.saved_model.load(saved_model_dir)
    x = np.load(inputs)
    sigs = loaded.signatures
    score = sigs["score"](images=tf.constant(x["images"]))
    # The first images (digits, k / 255 exactly) as PNG files, the way a client sends them.
    pngs = [tf.io.encode_png(tf.cast(tf.round(image * 255), tf.uint8)).numpy()
            for image in x["images"][:4]]
    on_bytes = sigs["score_bytes"](image_bytes=tf.constant(pngs))
    np.savez(outputs, scores=score["scores"], is_anomalous=score["is_anomalous"],
             maps=score["anomaly_maps"], bytes_maps=on_bytes["anomaly_maps"],
             bytes_scores=on_bytes["scores"], bytes_anomalous=on_bytes["is_anomalous"],
             reconstructions=sigs["serving_default"](images=tf.constant(x["images"]))["reconstructions"],
             one=sigs["serving_default"](images=tf.constant(x["images"][:1]))["reconstructions"],
             codes=sigs["encode"](images=tf.constant(x["images"]))["codes"],
             decoded=sigs["decode"](codes=tf.constant(x["codes"]))["reconstructions"])
    spec = lambda s: [[None if d is None else int(d) for d in s.shape], s.dtype.name]
    print(json.dumps({
        "signatures": {name: {"inputs": {k: spec(v) for k, v in f.structured_input_signature[1].items()},
                              "outputs": {k: spec(v) for k, v in f.structured_outputs.items()}}
                       for name, f in sigs.items()},
        "imported": sorted(m for m in sys.modules if m.startswith("tf_autoencoder")),
    }))
"""


@pytest.fixture(scope="module")
def nchw_run(nchw_idx_run, tmp_path_factory):
    """An NCHW run of one epoch (conftest's, copied), then `python -m tf_autoencoder export`
    on it (version 2)."""
    model_dir = copy_run(nchw_idx_run[0], tmp_path_factory.mktemp("nchw") / "run")
    export = run_python("-m", "tf_autoencoder", "export", model_dir)
    return model_dir, export


@pytest.fixture(scope="module")
def images():
    """1,000 NHWC float32 images: 500 test digits, then 500 of uniform noise."""
    digits = load_mnist_sample().test.images.astype(np.float32) / 255
    noise = np.random.default_rng(0).random((1000 - len(digits), 28, 28, 1), np.float32)
    return np.concatenate([digits, noise])


def keras_reference(model_dir, images):
    """What the finished run's Keras model computes for NHWC `images` (conftest's
    keras_outputs)."""
    config = load_finished_run(model_dir)
    return keras_outputs(keras.saving.load_model(os.path.join(model_dir, "model.keras"),
                                                 compile=False), config, images)


def load_in_fresh_process(jobs, cwd):
    """`jobs`: (saved_model_dir, images, codes, tmp_path) tuples, all loaded by one fresh
    process; returns (signatures, outputs) per job."""
    args = []
    for saved_model_dir, images, codes, tmp_path in jobs:
        np.savez(tmp_path / "inputs.npz", images=images, codes=codes)
        args += [saved_model_dir, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")]
    result = subprocess.run([sys.executable, "-c", FRESH_LOAD, *args],
                            capture_output=True, text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()[-len(jobs):]
    return [(json.loads(line), dict(np.load(job[3] / "outputs.npz")))
            for line, job in zip(printed, jobs)]


def test_training_exports_version_1(trained_run):
    """saved_model.pb by its content too: a file that is not a SavedModel, or one
    without the three signatures, fails (what they compute: fresh_loads)."""
    from tensorflow.core.protobuf import saved_model_pb2

    model_dir, train = trained_run
    export_dir = os.path.join(model_dir, "export")
    assert f"Exported {os.path.join(export_dir, '1')}" in train.stdout
    assert os.listdir(export_dir) == ["1"]  # no temporary directory left
    assert os.path.isfile(os.path.join(export_dir, "1", "saved_model.pb"))
    with open(os.path.join(export_dir, "1", "saved_model.pb"), "rb") as f:
        (graph,) = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs
    assert {"serving_default", "encode", "decode"} <= set(graph.signature_def)
    assert os.path.isfile(os.path.join(export_dir, "1", "variables", "variables.index"))


def test_export_command_writes_the_next_version(nchw_run):
    model_dir, export = nchw_run
    assert export.returncode == 0, export.stderr
    assert export.stdout.strip() == f"Exported {os.path.join(model_dir, 'export', '2')}"
    assert export_versions(os.path.join(model_dir, "export")) == [1, 2]
    assert find_saved_model(model_dir) == os.path.join(model_dir, "export", "2")


@pytest.fixture(scope="module")
def fresh_loads(trained_run, nchw_run, images, tmp_path_factory):
    """Per layout: (signatures, SavedModel outputs, Keras outputs). NHWC: the export that
    training wrote; NCHW: the one the export command wrote. One fresh process loads both."""
    layouts = [("NHWC", trained_run[0]), ("NCHW", nchw_run[0])]
    expected = {layout: keras_reference(model_dir, images) for layout, model_dir in layouts}
    for layout, model_dir in layouts:
        with open(os.path.join(model_dir, "threshold.json")) as f:
            expected[layout]["threshold"] = json.load(f)["threshold"]
    loaded = load_in_fresh_process(
        [(find_saved_model(model_dir), images, expected[layout]["codes"],
          tmp_path_factory.mktemp(layout)) for layout, model_dir in layouts],
        cwd=tmp_path_factory.mktemp("fresh"))
    return {layout: (signatures, got, expected[layout])
            for (layout, _), (signatures, got) in zip(layouts, loaded)}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fresh_process_loads_it_and_matches_keras(layout, fresh_loads):
    signatures, got, expected = fresh_loads[layout]
    assert signatures["imported"] == []
    assert got["reconstructions"].shape == (1000, 28, 28, 1) and got["one"].shape == (1, 28, 28, 1)
    assert got["codes"].shape == (1000, 4, 4, 8)
    for name in ["reconstructions", "codes", "decoded"]:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, rtol=0, err_msg=name)
    np.testing.assert_allclose(got["one"], expected["reconstructions"][:1], atol=1e-5, rtol=0)
    assert 0 <= got["reconstructions"].min() and got["reconstructions"].max() <= 1


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_the_score_signature_is_the_reconstruction_error_against_the_runs_threshold(
        layout, fresh_loads, images):
    """Catches a score over other pixels or layouts, and a threshold that is not the
    run's threshold.json (a constant of the export). To the NHWC run, trained on digits,
    uniform noise is anomalous (the NCHW run trained on noise)."""
    _, got, expected = fresh_loads[layout]
    scores = np.mean(np.square(images - expected["reconstructions"]), axis=(1, 2, 3))
    np.testing.assert_allclose(got["scores"], scores, atol=1e-6, rtol=1e-5)
    clear = np.abs(scores - expected["threshold"]) > 1e-5
    np.testing.assert_array_equal(got["is_anomalous"][clear],
                                  (scores > expected["threshold"])[clear])
    if layout == "NHWC":
        assert got["is_anomalous"][500:].all()
    # A client with TensorFlow alone gets the same from the image files themselves.
    np.testing.assert_allclose(got["bytes_scores"], got["scores"][:4], atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(got["bytes_anomalous"], got["is_anomalous"][:4])


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_the_score_signature_maps_each_image_as_the_numpy_reference(layout, fresh_loads, images):
    """The default map (l2, smoothed by sigma 4) of each image against its Keras
    reconstruction, by scipy; the image files give the same maps. Catches a map of an
    NCHW model left in NCHW, or the bytes path mapping other pixels."""
    _, got, expected = fresh_loads[layout]
    want = reference_anomaly_maps(images, expected["reconstructions"], "l2", 4.0)
    assert got["maps"].shape == (1000, 28, 28) and want.std() > 0
    np.testing.assert_allclose(got["maps"], want, atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(got["bytes_maps"], got["maps"][:4], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_signatures_take_nhwc_with_a_dynamic_batch(layout, fresh_loads):
    image, code = [[None, 28, 28, 1], "float32"], [[None, 4, 4, 8], "float32"]
    files = [[None], "string"]
    assert fresh_loads[layout][0]["signatures"] == {
        "serving_default": {"inputs": {"images": image}, "outputs": {"reconstructions": image}},
        "encode": {"inputs": {"images": image}, "outputs": {"codes": code}},
        "decode": {"inputs": {"codes": code}, "outputs": {"reconstructions": image}},
        "score": {"inputs": {"images": image},
                  "outputs": {"scores": [[None], "float32"], "is_anomalous": [[None], "bool"],
                              "anomaly_maps": [[None, 28, 28], "float32"]}},
        # The same on encoded image files (tests/test_preparation.py checks their outputs).
        "reconstruct_bytes": {"inputs": {"image_bytes": files},
                              "outputs": {"reconstructions": image}},
        "encode_bytes": {"inputs": {"image_bytes": files}, "outputs": {"codes": code}},
        "score_bytes": {"inputs": {"image_bytes": files},
                        "outputs": {"scores": [[None], "float32"],
                                    "is_anomalous": [[None], "bool"],
                                    "anomaly_maps": [[None, 28, 28], "float32"]}},
    }


def test_saved_model_cli_lists_the_signatures(trained_run):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--all", "--dir", find_saved_model(trained_run[0])],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for line in ["signature_def['serving_default']", "signature_def['encode']",
                 "signature_def['decode']", "inputs['images']", "inputs['codes']",
                 "outputs['reconstructions']", "outputs['codes']", "shape: (-1, 28, 28, 1)",
                 "shape: (-1, 4, 4, 8)"]:
        assert line in result.stdout, line


@pytest.fixture
def small_model():
    config = Config(image_shape=[12, 12, 1], num_filters=[4]).validate()
    return build_autoencoder(config), config


def test_a_failed_export_leaves_no_version(small_model, tmp_path, monkeypatch):
    model, config = small_model
    base = str(tmp_path / "export")
    real_save = tf.saved_model.save

    def save_then_crash(obj, export_dir, **kwargs):
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half a model")
        raise RuntimeError("disk pulled out mid-write")

    monkeypatch.setattr(tf.saved_model, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        export_saved_model(model, config, base)
    assert os.listdir(base) == []
    monkeypatch.setattr(tf.saved_model, "save", real_save)
    assert export_saved_model(model, config, base) == os.path.join(base, "1")


def test_temporary_exports_are_never_versions_and_those_of_dead_writers_go(small_model, tmp_path):
    """An export killed mid-write leaves its temporary folder; the next export removes
    it, but not one whose writer still runs (a concurrent export's)."""
    model, config = small_model
    base = tmp_path / "export"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid that no longer runs
    dead.wait()
    stale = base / f".tmp-{dead.pid}-0a1b2c3d-export"
    busy = base / f".tmp-{os.getpid()}-0a1b2c3d-export"
    for crashed in (stale, busy):  # what a killed (or a running) export leaves
        crashed.mkdir(parents=True)
        (crashed / "saved_model.pb").write_bytes(b"partial")
    with pytest.raises(ValueError, match="neither a SavedModel"):
        find_saved_model(str(base))
    assert export_saved_model(model, config, str(base)) == str(base / "1")
    assert sorted(os.listdir(base)) == [busy.name, "1"]
    assert export_saved_model(model, config, str(base)) == str(base / "2")
    assert find_saved_model(str(base)) == str(base / "2")


def test_read_only_export_dir_is_one_clear_error(small_model, tmp_path, monkeypatch):
    model, config = small_model
    base = tmp_path / "export"
    base.mkdir()
    base.chmod(0o500)
    if os.geteuid() == 0:  # root ignores the mode: refuse the write as the kernel would
        real_mkdir = os.mkdir

        def refusing_mkdir(path, *args, **kwargs):
            if os.path.dirname(os.path.abspath(path)) == str(base):
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    try:
        with pytest.raises(WriteError, match="cannot write to export directory .*Permission denied"):
            export_saved_model(model, config, str(base))
    finally:
        base.chmod(0o700)
    assert os.listdir(base) == []  # no temporary export left behind


def test_export_dir_that_cannot_be_created_is_one_line_and_exit_1(trained_run, tmp_path):
    # A path under a regular file cannot be created, even by root.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_python("-m", "tf_autoencoder", "export", trained_run[0], "--export_dir",
                        str(blocker / "export"))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "cannot write to export directory" in lines[0], result.stderr
    assert blocker.read_text() == "not a directory"


def test_export_of_an_unfinished_run_is_a_usage_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = run_python("-m", "tf_autoencoder", "export", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no model.keras" in result.stderr, result.stderr
    assert not (tmp_path / "export").exists()


def test_fully_connected_nchw_model_exports_nhwc_signatures(tmp_path):
    config = Config(model="fully_connected", hidden_units=[16, 8], image_shape=[12, 10, 3],
                    data_format="NCHW", precision="float32").validate()
    model = build_autoencoder(config)
    loaded = tf.saved_model.load(export_saved_model(model, config, str(tmp_path / "export")))
    images = np.random.default_rng(2).random((5, 12, 10, 3), np.float32)
    codes = loaded.signatures["encode"](images=images)["codes"].numpy()
    assert codes.shape == (5, 8)
    np.testing.assert_allclose(codes, model.encoder.predict_on_batch(images.transpose(0, 3, 1, 2)),
                               atol=1e-5, rtol=0)
    expected = tf.sigmoid(model.predict_on_batch(images.transpose(0, 3, 1, 2))).numpy()
    for got in [loaded.signatures["serving_default"](images=images)["reconstructions"],
                loaded.signatures["decode"](codes=codes)["reconstructions"]]:
        np.testing.assert_allclose(got.numpy(), expected.transpose(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_export_embeddings_reads_an_export_like_its_model_dir(trained_run, tmp_path, capsys):
    """Both sources give the codes the trained model (model.keras) gives the first 50
    test images: codes of other images, of noisy ones, or of an untrained model fail,
    even when the two sources agree with each other."""
    # export_embeddings.py's main, in this process (test_tensorboard runs the script).
    from tf_autoencoder.cli import main

    model_dir, _ = trained_run
    sources = {"model_dir": model_dir, "export": os.path.join(model_dir, "export", "1")}
    for name, source in sources.items():
        assert main(["--model_dir", source, "--what", "embedding", "--images", "50",
                     "--noise_factor", "0", "--save_npy", "--output", str(tmp_path / name)],
                    command="embeddings", prog="export_embeddings.py") == 0
        assert re.fullmatch(r"Encoded 50 images in [\d.]+ s, [\d,]+ images/s",
                            capsys.readouterr().out.splitlines()[-1])
    codes = np.load(tmp_path / "model_dir" / "codes.npy")
    assert codes.shape == (50, 128)
    np.testing.assert_allclose(np.load(tmp_path / "export" / "codes.npy"), codes, atol=1e-5)
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    images = load_mnist_sample().test.images[:50].astype(np.float32) / 255  # NHWC, no noise
    expected = model.encoder.predict_on_batch(images).reshape(50, -1)
    np.testing.assert_allclose(codes, expected, atol=1e-5, rtol=0)


def test_a_mixed_bfloat16_model_exports_a_float32_saved_model(tmp_path):
    config = Config(image_shape=[12, 12, 1], num_filters=[4, 4], precision="mixed_bfloat16").validate()
    model = build_autoencoder(config)
    rng = np.random.default_rng(3)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    loaded = tf.saved_model.load(export_saved_model(model, config, str(tmp_path / "export")))
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    nodes = [*graph.node, *(node for f in graph.library.function for node in f.node_def)]
    assert "Conv2D" in {node.op for node in nodes}  # the model's ops are in there
    assert tf.bfloat16.as_datatype_enum not in {attr.type for node in nodes
                                                for attr in node.attr.values()}
    images = rng.random((6, 12, 12, 1), np.float32)
    got = loaded.signatures["serving_default"](images=images)["reconstructions"].numpy()
    float32 = float32_twin(model, config)
    assert float32 is not model
    np.testing.assert_allclose(got, tf.sigmoid(float32.predict_on_batch(images)).numpy(), atol=1e-5)
    np.testing.assert_allclose(got, tf.sigmoid(model.predict_on_batch(images)).numpy(), atol=0.02)


# --- weights move by name -----------------------------------------------------------------

def dense_autoencoder(encoder, decoder=(("c", 4), ("d", 4)), dtype=None):
    """An Autoencoder of Dense layers: `encoder` and `decoder` are (name, units) in the
    order the layers are chained, on inputs of 4 values; weights drawn at random."""
    def chain(layers_, name, width):
        inputs = keras.Input((width,))
        x = inputs
        for layer_name, units in layers_:
            x = keras.layers.Dense(units, name=layer_name, dtype=dtype)(x)
        return keras.Model(inputs, x, name=name)

    model = Autoencoder(chain(encoder, "encoder", 4), chain(decoder, "decoder", encoder[-1][1]))
    rng = np.random.default_rng(len(model.weights))
    for weight in model.weights:
        weight.assign(rng.standard_normal(weight.shape).astype(np.float32))
    return model


def layer_weights(model):
    """Each layer's weights, by the layer's name and its part: independent of named_weights."""
    return {(part, layer.name): [w.numpy() for w in layer.weights]
            for part in ("encoder", "decoder") for layer in getattr(model, part).layers
            if layer.weights}


def assert_same_layer_weights(got, want):
    got, want = layer_weights(got), layer_weights(want)
    assert got.keys() == want.keys()
    for key in want:
        for g, w in zip(got[key], want[key]):
            np.testing.assert_array_equal(g, w, err_msg=str(key))


def test_weights_are_copied_by_name_whatever_order_the_layers_are_in():
    """Catches a copy by position (set_weights(get_weights())): the target chains its
    layers a and b in the other order, with the same shapes, so a copy by position puts
    a's weights in b without a word."""
    source = dense_autoencoder([("a", 4), ("b", 4)])
    by_position = dense_autoencoder([("b", 4), ("a", 4)])
    by_position.set_weights(source.get_weights())
    assert not np.array_equal(by_position.encoder.get_layer("a").kernel.numpy(),
                              source.encoder.get_layer("a").kernel.numpy())  # the hazard
    target = dense_autoencoder([("b", 4), ("a", 4)])
    copy_weights(source, target)
    assert_same_layer_weights(target, source)
    assert list(named_weights(source)) == ["encoder/a/kernel", "encoder/a/bias", "encoder/b/kernel",
                                          "encoder/b/bias", "decoder/c/kernel", "decoder/c/bias",
                                          "decoder/d/kernel", "decoder/d/bias"]


@pytest.mark.parametrize("target, message", [
    ([("a", 4), ("e", 4)], "encoder/b/bias has no place in the target model"),
    ([("a", 4), ("b", 4), ("e", 4)], "the source model has no encoder/e/kernel"),
    ([("a", 4), ("b", 5)], r"encoder/b/kernel is \(4, 4\) in the source model, \(4, 5\) in the target"),
])
def test_a_weight_missing_or_of_another_shape_is_one_line_and_copies_nothing(target, message):
    """Catches a copy that skips what it cannot match (a renamed layer keeps its initial
    weights), or that copies part of the weights before it fails."""
    source = dense_autoencoder([("a", 4), ("b", 4)])
    target = dense_autoencoder(target)
    before = {name: w.numpy() for name, w in named_weights(target).items()}
    with pytest.raises(ModelError, match=f"^cannot copy the weights: {message}$"):
        copy_weights(source, target)
    for name, weight in named_weights(target).items():
        np.testing.assert_array_equal(weight.numpy(), before[name], err_msg=name)


@pytest.mark.parametrize("twin", ["float32_twin", "serving_twin"])
def test_twins_put_each_weight_in_its_layer_when_the_builder_reorders_them(twin, monkeypatch):
    """The twins are built anew by today's builder: one that chains its layers in another
    order than the model was trained with must still get each layer's weights."""
    from tf_autoencoder.model import models

    source = dense_autoencoder([("a", 4), ("b", 4)], dtype="mixed_bfloat16")
    monkeypatch.setattr(models, "build_autoencoder",
                        lambda config: dense_autoencoder([("b", 4), ("a", 4)]))
    result = getattr(models, twin)(source, Config())
    assert result is not source
    assert_same_layer_weights(result, source)


# Every model variant and option that changes the model's variables: each must be found
# in its own export when a finished run is rerun (issue: the seed-generator states of
# dropout and the VAE's sampling made a rerun export again).
VARIANTS = {
    "convolutional": Config(num_filters=[4, 4]),
    "dropout": Config(num_filters=[4, 4], dropout=0.5),
    "variational": Config(model="variational", num_filters=[4, 4]),
    "fully_connected with dropout": Config(model="fully_connected", hidden_units=[16, 8],
                                           dropout=0.5),
    "NCHW": Config(num_filters=[4, 4], data_format="NCHW"),
    "mixed_bfloat16": Config(num_filters=[4, 4], precision="mixed_bfloat16"),
    "flat code": Config(num_filters=[4, 4], code_size=3),
    "linear path": Config(num_filters=[4, 4], code_size=3, linear_path="pca"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_export_of_a_run_holds_the_model_rebuilt_for_its_rerun(variant, tmp_path):
    """What a rerun of a finished run does: build the model anew (fresh random-number
    state), restore the weights, and ask export_holding whether the newest export holds
    them. Catches a comparison of model.variables (the seed generators' states differ:
    dropout and the VAE exported again on every rerun), and, with one weight moved, one
    that says yes to anything."""
    config = dataclasses.replace(VARIANTS[variant], image_shape=[12, 12, 1]).validate()
    if config.precision == "auto":
        config = dataclasses.replace(config, precision="float32")
    trained = build_autoencoder(config)
    rng = np.random.default_rng(4)
    for weight in trained.weights:
        weight.assign(weight.numpy() + 0.1 * rng.standard_normal(weight.shape).astype(np.float32))
    base = str(tmp_path / "export")
    path = export_saved_model(float32_twin(trained, config), config, base)

    rerun = build_autoencoder(config)
    copy_weights(trained, rerun)
    assert export_holding(float32_twin(rerun, config), base) == path
    moved = named_weights(rerun)[next(iter(named_weights(rerun)))]
    moved.assign(moved.numpy() + 1e-3)
    assert export_holding(float32_twin(rerun, config), base) is None


def test_rerun_of_a_finished_vae_trains_exports_and_rewrites_nothing(tmp_path):
    """The issue's run, end to end: the second run of the same command finds its export,
    says so, and leaves model.keras, test_metrics.json and export/ as they were (bytes
    and modification times)."""
    model_dir = str(tmp_path / "vae")
    args = ["--model", "variational", "--dataset", "mnist_sample", "--epochs", "1",
            "--batch_size", "500", "--embedding_images", "0", "--model_dir", model_dir]
    first = run_python("train.py", *args)
    assert first.returncode == 0, first.stderr
    paths = [os.path.join(model_dir, name) for name in ("model.keras", "test_metrics.json")]
    files = [*paths, *(os.path.join(root, name)
                       for root, _, names in os.walk(os.path.join(model_dir, "export"))
                       for name in names)]

    def state():
        return {path: (os.stat(path).st_mtime_ns, open(path, "rb").read()) for path in files}

    before = state()
    second = run_python("train.py", *args)
    assert second.returncode == 0, second.stderr
    assert "nothing to train or export" in second.stdout + second.stderr
    assert "Exported" not in second.stdout + second.stderr
    assert export_versions(os.path.join(model_dir, "export")) == [1]
    assert sorted(os.listdir(os.path.join(model_dir, "export"))) == ["1"]
    assert state() == before


# --- codes in one order -------------------------------------------------------------------

def test_codes_of_an_nchw_model_dir_are_the_export_encode_codes(nchw_run, images):
    """NCHW codes leave the model as NHWC everywhere: from model.keras (the embeddings of a
    model_dir) as from the SavedModel's encode. Catches a flatten in channels-first order:
    the same values, in another order."""
    model_dir, _ = nchw_run
    config = load_finished_run(model_dir)
    assert config.data_format == "channels_first"
    from_model_dir = load_finished_codec(config).encode(images[:50])
    from_export = load_saved_model(find_saved_model(model_dir)).encode(images[:50])
    assert from_model_dir.shape == (50, 4 * 4 * 8)
    np.testing.assert_allclose(from_model_dir, from_export, atol=1e-5, rtol=0)
    nhwc = keras_reference(model_dir, images[:50])["codes"]  # conftest: transposed by numpy
    np.testing.assert_allclose(from_model_dir, nhwc.reshape(50, -1), atol=1e-5, rtol=0)
