"""tf-autoencoder: the convolutional denoising autoencoder of the TensorFlow Estimator post,
ported to TensorFlow 2 / Keras 3."""
from .config import Config, ConfigError
from .layers import conv_decoder, conv_encoder, fc_decoder, fc_encoder
from .models import Autoencoder, build_autoencoder
from . import metrics  # registers the custom loss and metrics for model loading

__all__ = ["Autoencoder", "Config", "ConfigError", "build_autoencoder", "conv_decoder",
           "conv_encoder", "fc_decoder", "fc_encoder", "metrics"]
__version__ = "0.1.0"
