"""Loss and metrics on logits: the model outputs logits, pixels are sigmoid(logits)."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_autoencoder")
def sigmoid_mse(images, logits):
    """Mean squared error between the clean images and sigmoid(logits), per example."""
    return ops.mean(ops.square(images - ops.sigmoid(logits)), axis=(1, 2, 3))


class _OnPixels:
    """Makes a Keras metric of (images, pixels) one of (images, logits)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, ops.sigmoid(y_pred), sample_weight)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class RMSE(_OnPixels, keras.metrics.RootMeanSquaredError):
    """Root mean squared error over all pixels of images and sigmoid(logits), as the original."""

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class MSE(_OnPixels, keras.metrics.MeanSquaredError):
    """Mean squared error between images and sigmoid(logits)."""

    def __init__(self, name="mse", **kwargs):
        super().__init__(name=name, **kwargs)


def make_loss(name: str):
    """'bce': sigmoid cross-entropy on logits (the original); 'mse': MSE on sigmoid(logits)."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy(from_logits=True, name="bce")
    if name == "mse":
        return sigmoid_mse
    raise ValueError(f"unknown loss {name!r}: use bce or mse")


def make_metrics():
    return [RMSE(), keras.metrics.BinaryCrossentropy(from_logits=True, name="bce"), MSE()]


def gaussian_kl_per_example(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, one value per example: (batch,).

    mean, log_var: (batch, ...) of one shape; the KL sums over all but the batch axis.
    """
    per_value = -0.5 * (1.0 + log_var - ops.square(mean) - ops.exp(log_var))
    return ops.sum(per_value, axis=tuple(range(1, len(per_value.shape))))


def batch_mean(per_example):
    """The mean of (batch,) values; 0, not NaN, for an empty batch (a replica's share of a
    batch smaller than the replica count), as Keras' own losses reduce one."""
    count = ops.cast(ops.shape(per_example)[0], per_example.dtype)
    return ops.divide_no_nan(ops.sum(per_example), count)


def gaussian_kl(mean, log_var):
    """gaussian_kl_per_example averaged over the batch (0 for an empty one)."""
    return batch_mean(gaussian_kl_per_example(mean, log_var))
