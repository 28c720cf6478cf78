"""build_autoencoder(config): the whole model, with its encoder and decoder as separate models."""
from __future__ import annotations

import keras

from .config import Config
from .layers import conv_decoder, conv_encoder, fc_decoder, fc_encoder


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class Autoencoder(keras.Model):
    """images -> logits, as `decoder(encoder(images))`.

    `encoder` maps images (batch, H, W, C) to codes; `decoder` maps codes to logits of
    the images' shape; sigmoid(logits) gives pixels in [0, 1].  Both are plain Keras
    models, so codes can be computed and decoded on their own.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.build(encoder.input_shape)

    def build(self, input_shape):
        self.built = True  # encoder and decoder arrive built

    def call(self, images, training=None):
        return self.decoder(self.encoder(images, training=training), training=training)

    def get_config(self):
        return {
            "name": self.name,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)


def input_shape_for(config: Config) -> tuple[int, int, int]:
    """One image's shape in the model's layout: (H, W, C) or (C, H, W)."""
    if config.image_shape is None:
        raise ValueError("config.image_shape is not set: load the data first or set it, e.g. [28, 28, 1]")
    height, width, channels = config.image_shape
    return (channels, height, width) if config.channels_first else (height, width, channels)


def build_autoencoder(config: Config) -> Autoencoder:
    """The convolutional or fully connected autoencoder that `config` describes.

    With the defaults on 28x28x1 images: 7,873 weights (convolutional, [16, 8, 8]) or
    222,384 (fully connected, [128, 64, 32]).
    """
    shape = input_shape_for(config)
    settings = dict(data_format=config.data_format, weight_decay=config.weight_decay,
                    dropout=config.dropout)
    images = keras.Input(shape, name="images")
    if config.model == "convolutional":
        code = conv_encoder(images, config.num_filters, **settings)
        encoder = keras.Model(images, code, name="encoder")
        code_input = keras.Input(code.shape[1:], name="code")
        logits = conv_decoder(code_input, config.num_filters[::-1], shape, **settings)
    elif config.model == "fully_connected":
        code = fc_encoder(images, config.hidden_units, **settings)
        encoder = keras.Model(images, code, name="encoder")
        code_input = keras.Input(code.shape[1:], name="code")
        logits = fc_decoder(code_input, config.hidden_units[:-1][::-1], shape, **settings)
    else:
        raise ValueError(f"unknown model {config.model!r}")
    decoder = keras.Model(code_input, logits, name="decoder")
    return Autoencoder(encoder, decoder, name=f"{config.model}_autoencoder")
