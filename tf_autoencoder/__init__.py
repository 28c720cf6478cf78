"""tf-autoencoder: the convolutional denoising autoencoder of the TensorFlow Estimator post,
ported to TensorFlow 2 / Keras 3.

The names below load on first use, so that command lines can check their input and
answer --help without the seconds TensorFlow takes to import.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config", "ConfigError": "config",
    "conv_encoder": "layers", "conv_decoder": "layers", "fc_encoder": "layers",
    "fc_decoder": "layers",
    "Autoencoder": "models", "VariationalAutoencoder": "models", "build_autoencoder": "models",
    "gaussian_heads": "layers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tf_autoencoder' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
