"""What a run shows in TensorBoard (`tensorboard --logdir MODEL_DIR`) and writes as pictures.

model_dir/
  events.out.*  the hyperparameters and the metrics the HParams tab shows (hparams_config),
                and the final test metrics `test_training_noise/*` (see TEST_TAG)
  train/        Keras: epoch_loss, epoch_rmse, epoch_bce, epoch_mse, epoch_learning_rate;
                ours: gradient_norm, steps_per_second, a histogram of every trainable
                weight, and the model's graph
  validation/   Keras: the same epoch_* metrics, and evaluation_*_vs_iterations (the same
                values at the global step); ours: each hidden layer's activations
                and fraction of zeros on one fixed validation batch, and the
                reconstructions of the same test images every epoch (shown_images)
  projector/    latent codes of test images for the Projector tab (see projector.py)

Epoch summaries use Keras' step convention: step e is the end of epoch e (0-based).
"""
from __future__ import annotations

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.histogram import metadata as histogram_metadata

from ..config import HPARAMS, Config
from ..files import write_json_atomic
from ..images import image_grid, write_png
from .latent_2d import has_2d_code, write_latent_2d
from ..model.layout import to_nhwc
from ..model.maps import anomaly_map
from ..model_dir import LATENT_2D
from ..data.pipeline import noisy_inputs
from .projector import write_projector
from ..data.sources import Splits
from ..words import plural

NUM_RECONSTRUCTIONS = 10
MAP_COLOURS = "inferno"  # matplotlib's: black (0) through red to yellow (the largest)
TRAIN_RUN, VALIDATION_RUN, PROJECTOR_RUN = "train", "validation", "projector"


def tensorboard_callbacks(config: Config, splits: Splits) -> list:
    """Everything a training run logs each epoch: Keras' own TensorBoard callback (loss,
    metrics, learning rate) and ours (internals, reconstructions; PNGs with save_images)."""
    rng = np.random.default_rng(config.seed)  # fixed inputs, so epochs compare

    def fixed_inputs(images):  # (inputs, clean targets) in the model's layout
        return noisy_inputs(images, config.noise_factor, rng, config.data_format)

    probe = fixed_inputs(splits.train.images[:config.batch_size])
    activations_batch = fixed_inputs(splits.validation.images[:config.batch_size])
    shown = fixed_inputs(splits.test.images[
        shown_images(splits.test.labels, NUM_RECONSTRUCTIONS, config.seed)])
    return [
        # Its write_graph finds no graph in Keras 3; TrainingInternals writes it.
        keras.callbacks.TensorBoard(config.model_dir, write_graph=False, profile_batch=0),
        TrainingInternals(config, probe, activations_batch[0]),
        Reconstructions(*shown, log_dir=os.path.join(config.model_dir, VALIDATION_RUN),
                        png_dir=config.save_images, data_format=config.data_format,
                        map_kind=config.anomaly_map, map_sigma=config.anomaly_map_sigma),
    ]


def shown_images(labels: np.ndarray, count: int, seed: int | None) -> np.ndarray:
    """The indices of the `count` test images the Images tab shows every epoch: drawn from
    each class in turn (a folder's test split lists its classes one after the other, so
    its first images are all of one class), fixed by the run's seed; in order where the
    images have no labels."""
    if not len(labels) or np.all(labels < 0):
        return np.arange(min(count, len(labels)))
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    turns = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
    return np.array(turns[:count])


def hidden_layers(part: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `part` (encoder or decoder) with a non-linear activation."""
    return [layer for layer in part.layers
            if getattr(layer, "activation", keras.activations.linear) is not keras.activations.linear]


class TrainingInternals(keras.callbacks.Callback):
    """Per epoch: global gradient norm, steps per second, weight histograms (train run);
    activations and fraction of zeros of each hidden layer (validation run). Also writes
    the hyperparameters when training starts and the model's graph once.

    probe: (inputs, targets) of one fixed training batch; the gradient norm is that of the
    training loss (weight decay and the VAE's beta * kl included) on it with the epoch's
    final weights, with dropout off and the VAE decoding its mean code.
    activations_batch: one fixed validation batch of model inputs.
    """

    def __init__(self, config: Config, probe, activations_batch: np.ndarray):
        super().__init__()
        self.config = config
        self.probe = tuple(tf.constant(a) for a in probe)
        self.activations_batch = tf.constant(activations_batch)
        self.epoch_start = self.validation_start = None
        self.steps_at_epoch_start = 0
        self.traced_for = None

    def set_model(self, model):
        if model is self.traced_for:
            return  # fit() sets it again on every call; keep the traced functions
        super().set_model(model)
        self.traced_for = model
        parts = (model.encoder, model.decoder)
        self.hidden = [(part.name, hidden_layers(part)) for part in parts]
        # One model per part that returns every hidden layer's output and the part's output.
        probes = [keras.Model(part.inputs, [l.output for l in layers] + [part.output])
                  for part, (_, layers) in zip(parts, self.hidden)]

        @tf.function
        def activations(images):
            """images -> [(activations, fraction of zeros) of each hidden layer], encoder first."""
            outputs = []
            x = images
            for probe in probes:
                # tree.flatten: a part with no hidden layer (the decoder of fc's
                # --hidden_units 32) has one output, which Keras returns as a bare tensor.
                *hidden, x = keras.tree.flatten(probe(x, training=False))
                outputs += [(a, tf.math.zero_fraction(a)) for a in hidden]
            return outputs

        @tf.function
        def gradient_norm(inputs, targets):
            # training=False: no dropout mask or VAE noise is drawn, so the summary takes
            # nothing from the generators training draws from, and every epoch's norm is
            # of one function of the weights.
            with tf.GradientTape() as tape:
                logits = model(inputs, training=False)
                loss = keras.ops.mean(model.loss(targets, logits))
                if hasattr(model, "kl_loss"):  # the VAE's beta * kl, part of what it trains on
                    loss += model.kl_loss()
                if model.losses:
                    loss += keras.ops.sum(model.losses)
            return tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))

        self.activations, self.gradient_norm = activations, gradient_norm

    def on_train_begin(self, logs=None):
        self.train_writer = tf.summary.create_file_writer(
            os.path.join(self.config.model_dir, TRAIN_RUN))
        self.validation_writer = tf.summary.create_file_writer(
            os.path.join(self.config.model_dir, VALIDATION_RUN))
        write_hparams(self.config)
        shape = (None,) + tuple(self.model.encoder.input_shape[1:])
        forward = tf.function(lambda images: self.model(images, training=False), autograph=False)
        with self.train_writer.as_default():
            tf.summary.graph(forward.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.validation_start = time.perf_counter(), None
        self.steps_at_epoch_start = int(self.model.optimizer.iterations.numpy())

    def on_test_begin(self, logs=None):
        if self.epoch_start is not None and self.validation_start is None:
            self.validation_start = time.perf_counter()  # training steps end here

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self.validation_start or time.perf_counter()) - self.epoch_start
        steps = int(self.model.optimizer.iterations.numpy()) - self.steps_at_epoch_start
        with self.train_writer.as_default(step=epoch):
            tf.summary.scalar("steps_per_second", steps / seconds,
                              description="training steps per second, validation excluded")
            tf.summary.scalar("gradient_norm", self.gradient_norm(*self.probe),
                              description="global norm of the training loss's gradient "
                                          "on one fixed training batch")
            for part in (self.model.encoder, self.model.decoder):
                for weight in part.trainable_weights:
                    histogram(f"weights/{part.name}/{weight.path}", weight)
        outputs = iter(self.activations(self.activations_batch))
        with self.validation_writer.as_default(step=epoch):
            for part, layers in self.hidden:
                for layer in layers:
                    activation, zero_fraction = next(outputs)
                    histogram(f"activations/{part}/{layer.name}", activation)
                    tf.summary.scalar(f"zero_fraction/{part}/{layer.name}", zero_fraction)
        self.train_writer.flush()
        self.validation_writer.flush()

    def on_train_end(self, logs=None):
        self.train_writer.close()
        self.validation_writer.close()


class Reconstructions(keras.callbacks.Callback):
    """After each epoch, a grid of the same test images: inputs, noisy inputs (when
    denoising) and reconstructions (the original's SaveReconstructionListener), as the
    image summary `reconstructions` in `log_dir` and, with `png_dir`, as
    `png_dir/step_XXXXX.png` named by the global step. Beside it, `anomaly_maps`: the
    anomaly map (model/maps.py, the run's map_kind and map_sigma) of each clean image
    against its reconstruction, coloured on one scale for the row, from 0 to its largest
    value: the same ten small maps, so their cost is that of ten reconstructions.

    inputs, clean: (n, H, W, C) or (n, C, H, W) float32 in [0, 1] in the model's layout;
    `inputs` is `clean` itself when there is no noise.
    """

    def __init__(self, inputs: np.ndarray, clean: np.ndarray, *, log_dir: str,
                 png_dir: str | None = None, data_format: str = "channels_last",
                 map_kind: str = "l2", map_sigma: float = 4.0):
        super().__init__()
        self.inputs, self.clean = inputs, clean
        self.log_dir, self.png_dir = log_dir, png_dir
        self.data_format = data_format
        self.map_kind, self.map_sigma = map_kind, map_sigma

    def on_train_begin(self, logs=None):
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def grid(self, reconstructions: np.ndarray) -> np.ndarray:
        """uint8 (rows * (H + 2) + 2, n * (W + 2) + 2, C): one row of images each."""
        noisy = [] if self.inputs is self.clean else [self.inputs]
        return image_grid([to_nhwc(r, self.data_format)
                           for r in [self.clean, *noisy, reconstructions]])

    def maps_row(self, reconstructions: np.ndarray) -> np.ndarray:
        """uint8 (H + 4, n * (W + 2) + 2, 3): each clean image's anomaly map, coloured."""
        import matplotlib

        maps = np.asarray(anomaly_map(to_nhwc(self.clean, self.data_format),
                                      to_nhwc(reconstructions, self.data_format),
                                      self.map_kind, self.map_sigma))
        scaled = maps / max(float(maps.max()), 1e-12)
        coloured = matplotlib.colormaps[MAP_COLOURS](scaled)[..., :3]
        return image_grid([coloured])

    def on_epoch_end(self, epoch, logs=None):
        reconstructions = tf.sigmoid(self.model(self.inputs, training=False)).numpy()
        grid = self.grid(reconstructions)
        rows = "input, noisy input, reconstruction" if self.inputs is not self.clean \
            else "input, reconstruction"
        with self.writer.as_default(step=epoch):
            tf.summary.image("reconstructions", grid[None], description=f"rows: {rows}")
            tf.summary.image("anomaly_maps", self.maps_row(reconstructions)[None],
                             description=f"the {self.map_kind} anomaly map of each input above "
                                         "against its reconstruction; one colour scale "
                                         f"({MAP_COLOURS}) from 0 to the row's largest value")
        self.writer.flush()
        if self.png_dir:
            step = int(self.model.optimizer.iterations.numpy())
            write_png(os.path.join(self.png_dir, f"step_{step:05d}.png"), grid)

    def on_train_end(self, logs=None):
        self.writer.close()


def histogram(tag: str, values) -> None:
    """Writes what tf.summary.histogram writes, (30, 3) rows of left edge, right edge and
    count, in time and memory linear in the values: TensorBoard's version one-hot
    encodes every value in float64, seconds for one batch of activations."""
    # A tensor, not a Keras variable: tracing those recurses in tf.function's type checks.
    tf.summary.write(tag, _buckets(tf.convert_to_tensor(values)),
                     metadata=histogram_metadata.create_summary_metadata(None, None))


@tf.function(reduce_retracing=True)
def _buckets(values, bins=30):
    values = tf.reshape(tf.cast(values, tf.float64), [-1])
    low, high = tf.reduce_min(values), tf.reduce_max(values)
    if low < high:
        counts = tf.histogram_fixed_width(values, tf.stack([low, high]), nbins=bins)
        edges = tf.concat([tf.linspace(low, high, bins + 1)[:-1], [high]], 0)
    else:  # one value: all in the last bucket, edges all equal, as TensorBoard does
        counts = tf.one_hot(bins - 1, bins, on_value=tf.size(values), dtype=tf.int32)
        edges = tf.fill([bins + 1], high)
    return tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1)


# The test metrics training reports score the test split as training and validation see
# it: inputs with the run's --noise_factor noise (none at 0), targets the clean images.
# `tf-autoencoder evaluate` scores clean inputs. One tag for every run, so that the HParams
# tab puts runs of any noise_factor in one column; its description says what it holds.
TEST_TAG = "test_training_noise"
TEST_METRIC_NAMES = ("loss", "rmse", "bce", "mse")  # the VAE adds "kl"
# A run with --normal_classes: the test AUROC of its anomaly score, after training.
AUROC_TAG = "anomaly/test_auroc"


def test_inputs(noise_factor: float) -> str:
    """What the training's test metrics score, in words."""
    if noise_factor > 0:
        return (f"test images with noise_factor {noise_factor:g} noise (clipped to [0, 1]), "
                "scored against the clean images")
    return "clean test images (noise_factor 0)"


def test_metrics_line(metrics: dict, noise_factor: float, path: str) -> str:
    """The line training prints for its test metrics, naming what they score."""
    values = ", ".join(f"{name} {value:.5f}" for name, value in metrics.items())
    if noise_factor > 0:
        kind = (f"Test, noisy inputs (noise_factor {noise_factor:g}) against clean images; "
                "`evaluate` scores clean inputs")
    else:
        kind = "Test, clean inputs"
    return f"{kind}: {values} -> {path}"


def write_test_metrics(path: str, metrics: dict, noise_factor: float) -> None:
    """test_metrics.json: the metrics under "metrics", with what they score beside them."""
    record = {"inputs": test_inputs(noise_factor), "noise_factor": noise_factor,
              "metrics": metrics}
    write_json_atomic(path, record)


def read_test_metrics(path: str) -> dict:
    """The metrics of a test_metrics.json, this version's or an older flat one
    ({"loss": ..., "rmse": ...}, written before the file said what it scores)."""
    with open(path) as f:
        record = json.load(f)
    return record["metrics"] if isinstance(record.get("metrics"), dict) else record


def write_hparams(config: Config) -> None:
    """Records the run's hyperparameters in model_dir for the HParams tab, and declares
    the metrics it shows (hparams_config): without the declaration the tab looks the
    metrics up in a run named "./." when the logdir is the model_dir itself, and shows
    none; with it, they are found there and in a parent logdir of several runs alike."""
    values = {}
    for name in HPARAMS:
        value = getattr(config, name)
        if isinstance(value, list):
            value = ",".join(map(str, value))
        values[name] = value
    values["dropout"] = config.dropout or 1.0  # keep probability: 1 is no dropout
    # Unset, not 0: a code_size of 0 reads as a setting (without one, the last map is the code).
    values["code_size"] = "unset" if config.code_size is None else str(config.code_size)
    names = TEST_METRIC_NAMES + (("kl",) if config.model == "variational" else ())
    noise = " (training noise)" if config.noise_factor > 0 else ""
    metrics = [hp.Metric(f"{TEST_TAG}/{name}", display_name=f"test {name}{noise}",
                         description=f"{name} on the test split after training: "
                                     f"{test_inputs(config.noise_factor)}")
               for name in names]
    if config.normal_classes is not None:
        metrics.append(hp.Metric(AUROC_TAG, display_name="test AUROC",
                                 description="how well the run's anomaly score tells the test "
                                             "images of other classes from the normal ones"))
    values["normal_classes"] = values["normal_classes"] or "all"
    with tf.summary.create_file_writer(config.model_dir).as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in values], metrics=metrics)
        hp.hparams(values, trial_id=os.path.basename(os.path.abspath(config.model_dir)))


def write_test_auroc(config: Config, auroc: float, epoch: int) -> None:
    """The test AUROC of a run with normal classes, as the HParams tab's AUROC column."""
    with tf.summary.create_file_writer(config.model_dir).as_default(step=epoch):
        tf.summary.scalar(AUROC_TAG, auroc, description="test AUROC of the anomaly score")


def write_run_end(model: keras.Model, config: Config, splits: Splits,
                  test_metrics: dict, epoch: int, log=print) -> None:
    """After training: the test metrics as scalars `test_training_noise/<name>` at step
    `epoch` (so the HParams tab compares runs by them), and the projector of the first
    config.embedding_images test images' codes (none if 0)."""
    with tf.summary.create_file_writer(config.model_dir).as_default(step=epoch):
        for name, value in test_metrics.items():
            tf.summary.scalar(f"{TEST_TAG}/{name}", value,
                              description=f"{name}: {test_inputs(config.noise_factor)}")
    count = min(config.embedding_images, len(splits.test))
    if count:
        images = splits.test.images[:count]
        inputs, _ = noisy_inputs(images, config.noise_factor,
                                          np.random.default_rng(config.seed), config.data_format)
        # NHWC, as codes are everywhere outside the model (the export's encode, embeddings).
        codes = to_nhwc(model.encoder.predict(inputs, batch_size=config.batch_size, verbose=0),
                        config.data_format)
        log_dir = os.path.join(config.model_dir, PROJECTOR_RUN)
        write_projector(log_dir, codes, splits.test.labels[:count], images,
                        class_names=splits.class_names)
        log(f"Projector: codes of {plural(count, 'test image')} in {log_dir}")
        if has_2d_code(model):
            path = os.path.join(config.model_dir, LATENT_2D)
            write_latent_2d(path, model, codes, splits.test.labels[:count], config.data_format)
            log(f"Code space: {path}")
