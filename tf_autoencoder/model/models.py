"""build_autoencoder(config): the whole model, with its encoder and decoder as separate models."""
from __future__ import annotations

import contextlib
import dataclasses
import math

import keras
from keras import layers, ops

from ..config import Config
from ..errors import ModelError
from .layers import (conv_decoder, conv_encoder, expand_code, fc_decoder, fc_encoder, flat_code,
                     gaussian_heads, linear_decoder, linear_encoder, PixelLogits)
from .metrics import batch_mean, gaussian_kl_per_example
from .precision import resolve_precision


class _TwoParts(keras.Model):
    """A model made of two built Keras models, the attributes named in PARTS; it saves
    and loads with them (and with what `extra_config` adds)."""

    PARTS: tuple[str, str]

    def build(self, input_shape):
        self.built = True  # its parts arrive built

    @property
    def parts(self) -> tuple:
        """The sub-models that together hold every weight once."""
        return tuple(getattr(self, name) for name in self.PARTS)

    def extra_config(self) -> dict:
        return {}

    def get_config(self):
        return {"name": self.name, **self.extra_config(),
                **{name: keras.saving.serialize_keras_object(getattr(self, name))
                   for name in self.PARTS}}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        parts = [keras.saving.deserialize_keras_object(config.pop(name)) for name in cls.PARTS]
        return cls(*parts, **config)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class Autoencoder(_TwoParts):
    """images -> logits, as `decoder(encoder(images))`.

    `encoder` maps images (batch, H, W, C) to codes; `decoder` maps codes to logits of
    the images' shape; sigmoid(logits) gives pixels in [0, 1].  Both are plain Keras
    models, so codes can be computed and decoded on their own.
    """

    PARTS = ("encoder", "decoder")

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.build(encoder.input_shape)

    def call(self, images, training=None):
        return self.decoder(self.encoder(images, training=training), training=training)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class VariationalAutoencoder(_TwoParts):
    """images -> logits through a Gaussian code: a convolutional VAE (Kingma and Welling,
    "Auto-Encoding Variational Bayes", ICLR 2014).

    `posterior` maps images to the mean and log-variance of q(code | image), each of the
    code's shape; `encoder` is its mean alone (images -> codes) and `decoder` maps codes
    to logits, as in `Autoencoder`.  Training decodes mean + exp(log_var / 2) * eps,
    eps ~ N(0, I) (the reparameterisation trick); inference decodes the mean.

    Loss = the compiled reconstruction loss + beta * kl, where kl is the KL divergence
    from N(0, I) in nats per image divided by the number of values per image, so that
    it is on the scale of the per-pixel BCE. In training, with loss bce and beta 1, the
    loss is a one-sample estimate of the negative evidence lower bound per pixel.
    Evaluation (validation, test, `evaluate`) decodes the mean instead: its loss is the
    reconstruction of the mean code + beta * kl, deterministic, so that epochs and runs
    compare on one number and it scores the model that inference and the exports use;
    it is not the ELBO (the reconstruction term is not an expectation over codes).
    kl is reported as its own metric, a mean over images like the others.
    """

    PARTS = ("posterior", "decoder")

    def __init__(self, posterior: keras.Model, decoder: keras.Model, beta: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.posterior = posterior
        self.encoder = keras.Model(posterior.input, posterior.outputs[0], name="encoder")
        self.decoder = decoder
        self.beta = beta
        self.values_per_image = math.prod(decoder.output_shape[1:])
        self.seed_generator = keras.random.SeedGenerator()
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.build(posterior.input_shape)

    def call(self, images, training=None):
        mean, log_var = self.posterior(images, training=training)
        code = mean
        if training:
            noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
            code = mean + ops.exp(0.5 * log_var) * noise
        # kl per image, (batch,): read by compute_loss in the same step, as Keras reads
        # what add_loss records.
        self.last_kl = gaussian_kl_per_example(mean, log_var) / self.values_per_image
        return self.decoder(code, training=training)

    def kl_loss(self):
        """beta * the batch's mean kl, of the last call: the term the loss adds."""
        return self.beta * batch_mean(self.last_kl)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        # Every image counts once, so a split's kl is its mean over images whatever the
        # batches (a mean of batch means would weigh a short last batch's images more).
        self.kl_tracker.update_state(self.last_kl)
        # Keras' path for add_loss terms: under a tf.distribute strategy it divides by the
        # replicas, as it does the reconstruction loss, so their gradients sum to one batch's.
        return reconstruction + self._aggregate_additional_loss(self.kl_loss())

    def extra_config(self) -> dict:
        return {"beta": self.beta}


def input_shape_for(config: Config) -> tuple[int, int, int]:
    """One image's shape in the model's layout: (H, W, C) or (C, H, W)."""
    if config.image_shape is None:
        raise ValueError("config.image_shape is not set: load the data first or set it, e.g. [28, 28, 1]")
    height, width, channels = config.image_shape
    return (channels, height, width) if config.channels_first else (height, width, channels)


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Layers created inside take the dtype policy `name`; the global one is restored after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_autoencoder(config: Config) -> Autoencoder | VariationalAutoencoder:
    """The convolutional, fully connected or variational autoencoder that `config` describes.

    With the defaults on 28x28x1 images: 7,873 weights (convolutional, [16, 8, 8]) or
    222,384 (fully connected, [128, 64, 32]).

    config.precision "mixed_bfloat16" computes in bfloat16 and keeps the weights in
    float32; codes and logits are cast to float32, so losses, metrics, summaries and
    exports see float32 whatever the precision.
    """
    with _dtype_policy(resolve_precision(config.precision)):
        return _build(config)


def _to_float32(x, name):
    # Keras' mixed-precision recipe: a float32 layer at the end casts the output.
    return layers.Activation("linear", dtype="float32", name=name)(x) if x.dtype != "float32" else x


def _build(config: Config) -> Autoencoder | VariationalAutoencoder:
    shape = input_shape_for(config)
    settings = dict(data_format=config.data_format, weight_decay=config.weight_decay,
                    dropout=config.dropout)
    images = keras.Input(shape, name="images")
    if config.model in ("convolutional", "variational"):
        features = conv_encoder(images, config.num_filters,
                                **config.builder_options("conv_encoder"), **settings)
    elif config.model == "fully_connected":
        features = fc_encoder(images, config.hidden_units, **settings)
    else:
        raise ValueError(f"unknown model {config.model!r}")
    # The code: the encoder's features themselves, or a flat bottleneck of code_size values.
    if config.model == "variational":
        mean, log_var = gaussian_heads(features, config.num_filters[-1],
                                       data_format=config.data_format,
                                       weight_decay=config.weight_decay,
                                       code_size=config.code_size)
        posterior = keras.Model(images, [_to_float32(mean, "mean_float32"),
                                         _to_float32(log_var, "log_var_float32")],
                                name="posterior")
        code = mean
    else:
        code = features
        if config.code_size:
            code = flat_code(features, config.code_size, data_format=config.data_format,
                             weight_decay=config.weight_decay)
        if config.linear_path != "none":
            # The code: a linear projection of the image plus the convolutions' share.
            code = layers.Add(name="code_sum")([
                linear_encoder(images, config.code_size, data_format=config.data_format), code])
        code = _to_float32(code, "code_float32")
        if config.code_l1:
            # Keras divides the penalty by the batch size: code_l1 * mean over images of sum |code|.
            code = layers.ActivityRegularization(l1=config.code_l1, name="code_l1",
                                                 dtype="float32")(code)
        encoder = keras.Model(images, code, name="encoder")

    code_input = keras.Input(code.shape[1:], name="code")
    x = code_input
    if config.code_size:
        x = expand_code(x, features.shape[1:], **settings)
    if config.model == "fully_connected":
        logits = fc_decoder(x, config.hidden_units[:-1][::-1], shape, **settings)
    else:
        logits = conv_decoder(x, config.num_filters[::-1], shape,
                              **config.builder_options("conv_decoder"), **settings)
        if config.linear_path != "none":
            # The image: the linear decoding of the code, plus the convolutions' share.
            linear_pixels = linear_decoder(code_input, shape, data_format=config.data_format)
            # The sum in float32 too, so the linear path's log-odds (PixelLogits: float32)
            # are not rounded to bfloat16 before the convolutions' share is added.
            logits = layers.Add(name="logits_sum", dtype="float32")([
                PixelLogits(name="linear_logits")(linear_pixels), logits])
    decoder = keras.Model(code_input, _to_float32(logits, "logits_float32"), name="decoder")
    if config.model == "variational":
        return VariationalAutoencoder(posterior, decoder, beta=config.beta,
                                      name="variational_autoencoder")
    return Autoencoder(encoder, decoder, name=f"{config.model}_autoencoder")


def named_weights(model: keras.Model) -> dict[str, keras.Variable]:
    """The weights of `model` (an Autoencoder or VariationalAutoencoder) by name:
    "<part>/<layer>/<weight>", e.g. "encoder/block0_conv0/kernel". The weights alone: not
    the random-number state of dropout or of the VAE's sampling (model.variables has it),
    which says nothing about what the model computes."""
    named = {}
    for part in model.PARTS:
        for weight in getattr(model, part).weights:
            name = f"{part}/{weight.path}"
            if name in named:
                raise ModelError(f"the model has two weights named {name}: give its layers "
                                 "distinct names")
            named[name] = weight
    return named


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Sets each weight of `target` to the weight of `source` with its name
    (named_weights), whatever order their layers are in. Every name and shape is checked
    first: ModelError, in one line naming the weight, if one is missing on either side
    or has another shape, and then nothing is copied."""
    have, want = named_weights(source), named_weights(target)
    unplaced = sorted(have.keys() - want.keys())
    if unplaced:
        raise ModelError(f"cannot copy the weights: {unplaced[0]} has no place in the target "
                         "model")
    for name, weight in want.items():
        if name not in have:
            raise ModelError(f"cannot copy the weights: the source model has no {name}")
        if tuple(have[name].shape) != tuple(weight.shape):
            raise ModelError(f"cannot copy the weights: {name} is {tuple(have[name].shape)} in "
                             f"the source model, {tuple(weight.shape)} in the target")
    for name, weight in want.items():
        weight.assign(have[name].numpy())


def float32_twin(model: keras.Model, config: Config) -> keras.Model:
    """`model` itself if it computes in float32, else a float32 copy with its weights
    (copied by name).

    Whatever precision trained, what comes after training computes in float32: the saved
    model, the export, the projector's codes and the commands that read a run. bfloat16
    is emulated, and slow, on CPUs without native support, and results should not depend
    on the CPU that trained the model.
    """
    if all(layer.compute_dtype == "float32" for part in model.parts for layer in part.layers):
        return model
    twin = build_autoencoder(dataclasses.replace(config, precision="float32"))
    copy_weights(model, twin)
    return twin


def serving_twin(model: keras.Model, config: Config) -> keras.Model:
    """`model` as the exports compute it: float32 and channels_last (NHWC), built anew
    with its weights, copied by name.

    The layouts share weights (the builders see to it), and serving takes NHWC images, so
    an NCHW model is served by its NHWC twin: no transposes around it, and TFLite converts
    it (an NCHW transposed convolution with a dynamic batch needs an op TFLite lacks).
    Built anew, by today's builders, so that a model saved before a builder's fix exports
    with the fix; by name, so that a builder that reorders its layers still puts each
    weight in its layer, or says which weight has no place.
    """
    twin = build_autoencoder(dataclasses.replace(config, precision="float32",
                                                 data_format="channels_last"))
    copy_weights(model, twin)
    return twin
