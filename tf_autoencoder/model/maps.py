"""Anomaly maps: where an image and its reconstruction disagree, one value per pixel.

    anomaly_map(images, reconstructions, kind, sigma) -> (batch, H, W) float32

images, reconstructions: (batch, H, W, C) NHWC in [0, 1], H and W known when the graph
is built (the model's input size). Written in keras.ops with constant kernels and index
tables only (gather, depthwise convolution, element-wise ops), so the same code runs in
a SavedModel and converts to TFLite and ONNX builtins.

Padding is the symmetric extension (d c b a | a b c d: scipy.ndimage's default 'reflect',
the mode scikit-image's SSIM filters with), done as a gather over a constant index table:
unlike tf.pad's mirror modes it is exact for any image size, a window wider than the
image included, and converts everywhere.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from ..config import ANOMALY_MAPS as KINDS  # declared with the --anomaly_map setting

# The smoothing's kernel spans 4 sigma each side: 2 * int(4 sigma + 0.5) + 1 taps, 33 at
# sigma 4, as anomalib's GaussianBlur2d (compute_kernel_size) and scipy's default
# truncate=4.0.
SMOOTHING_TRUNCATE = 4.0

# SSIM as Wang et al. (2004), "Image quality assessment: from error visibility to
# structural similarity": an 11-tap Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03,
# data range 1, population (not sample) covariances. Truncating at 3.5 sigma gives the
# 11 taps, as scikit-image's structural_similarity(gaussian_weights=True) does.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def gaussian_kernel_1d(sigma: float, truncate: float) -> np.ndarray:
    """The normalised 1-D Gaussian of scipy.ndimage: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def symmetric_indices(size: int, radius: int) -> np.ndarray:
    """Indices that extend an axis of `size` by `radius` each side, symmetrically
    (the edge sample repeated), for any radius: the extension has period 2 * size."""
    period = 2 * size
    positions = np.mod(np.arange(-radius, size + radius), period)
    return np.where(positions < size, positions, period - 1 - positions).astype(np.int32)


def gaussian_blur(x, sigma: float, truncate: float):
    """Each channel of (batch, H, W, C) filtered by a Gaussian of `sigma` pixels, same size
    out: symmetric padding, then a separable depthwise convolution (a column, a row)."""
    height, width, channels = _static_shape(x)
    kernel = gaussian_kernel_1d(sigma, truncate)
    radius = len(kernel) // 2
    x = ops.take(x, symmetric_indices(height, radius), axis=1)
    x = ops.take(x, symmetric_indices(width, radius), axis=2)
    # depthwise kernels: (kh, kw, channels, 1)
    column = np.tile(kernel.reshape(-1, 1, 1, 1), (1, 1, channels, 1))
    row = np.tile(kernel.reshape(1, -1, 1, 1), (1, 1, channels, 1))
    x = ops.depthwise_conv(x, column, strides=1, padding="valid", data_format="channels_last")
    return ops.depthwise_conv(x, row, strides=1, padding="valid", data_format="channels_last")


def ssim_map(images, reconstructions):
    """SSIM of every pixel and channel: (batch, H, W, C), 1 where the two agree."""
    channels = _static_shape(images)[2]
    # Moments of pixels centred on mid-grey: (co)variances are unchanged by the shift, and
    # E[x^2] - E[x]^2 in float32 cancels less with values in [-0.5, 0.5] than in [0, 1].
    x, y = images - 0.5, reconstructions - 0.5
    # The five local moments in one filtering pass: x, y, x^2, y^2, xy side by side.
    moments = gaussian_blur(ops.concatenate([x, y, x * x, y * y, x * y], axis=-1),
                            SSIM_SIGMA, SSIM_TRUNCATE)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = (
        moments[..., i * channels:(i + 1) * channels] for i in range(5))
    var_x = mean_xx - mean_x * mean_x
    var_y = mean_yy - mean_y * mean_y
    cov_xy = mean_xy - mean_x * mean_y
    mean_x, mean_y = mean_x + 0.5, mean_y + 0.5  # the luminance term needs the true means
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # (K * data range)^2, data range 1
    return ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)
            / ((mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)))


def anomaly_map(images, reconstructions, kind: str = "l2", sigma: float = 4.0):
    """Per-pixel disagreement of (batch, H, W, C) images in [0, 1] with their
    reconstructions: (batch, H, W) float32, larger = more unusual.

    kind "l2": the squared error averaged over channels (the MVTec AD paper's L2 map).
    kind "ssim": 1 - SSIM, computed per channel and then averaged. Per channel, not on
    the channel mean, because a colour defect of unchanged brightness (a red stain on a
    green part) vanishes from the channel mean; it is also scikit-image's rule for
    colour images. On one channel both rules are the same.
    Both are then smoothed by a Gaussian of `sigma` pixels (anomalib uses 4); 0 = none.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown anomaly map kind {kind!r}: use one of {', '.join(KINDS)}")
    if sigma < 0:
        raise ValueError(f"the map's smoothing sigma is {sigma}: use 0 (none) or more")
    images = ops.cast(images, "float32")
    reconstructions = ops.cast(reconstructions, "float32")
    if kind == "l2":
        per_pixel = ops.mean(ops.square(images - reconstructions), axis=-1, keepdims=True)
    else:
        per_pixel = ops.mean(1.0 - ssim_map(images, reconstructions), axis=-1, keepdims=True)
    if sigma > 0:
        per_pixel = gaussian_blur(per_pixel, sigma, SMOOTHING_TRUNCATE)
    return per_pixel[..., 0]


def _static_shape(x) -> tuple[int, int, int]:
    height, width, channels = tuple(x.shape)[1:]
    if None in (height, width, channels):
        raise ValueError(f"anomaly maps need images of a known size, got shape {tuple(x.shape)}")
    return int(height), int(width), int(channels)
