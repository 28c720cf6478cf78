"""tf-autoencoder: the convolutional denoising autoencoder of the TensorFlow Estimator post,
ported to TensorFlow 2 / Keras 3.

The names below load on first use, so that command lines can check their input and
answer --help without the seconds TensorFlow takes to import.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config", "ConfigError": "config",
    "conv_encoder": "model.layers", "conv_decoder": "model.layers", "fc_encoder": "model.layers",
    "fc_decoder": "model.layers",
    "Autoencoder": "model.models", "VariationalAutoencoder": "model.models", "build_autoencoder": "model.models",
    "gaussian_heads": "model.layers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tf_autoencoder' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
