"""Loss and metrics on logits: the model outputs logits, pixels are sigmoid(logits)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_autoencoder")
def sigmoid_mse(images, logits):
    """Mean squared error between the clean images and sigmoid(logits), per example."""
    return ops.mean(ops.square(images - ops.sigmoid(logits)), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class RMSE(keras.metrics.RootMeanSquaredError):
    """Root mean squared error over all pixels of images and sigmoid(logits), as the original."""

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, ops.sigmoid(y_pred), sample_weight)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class MSE(keras.metrics.MeanSquaredError):
    """Mean squared error between images and sigmoid(logits)."""

    def __init__(self, name="mse", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, ops.sigmoid(y_pred), sample_weight)


def make_loss(name: str):
    """'bce': sigmoid cross-entropy on logits (the original); 'mse': MSE on sigmoid(logits)."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True, name="bce")
    if name == "mse":
        return sigmoid_mse
    raise ValueError(f"unknown loss {name!r}: use bce or mse")


def make_metrics():
    return [RMSE(), keras.metrics.BinaryCrossentropy(from_logits=True, name="bce"), MSE()]
