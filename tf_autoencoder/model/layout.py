"""NHWC and NCHW: the model computes in its data_format; images and codes outside it
(files, summaries, exports, serving) are NHWC. The one place that converts between them.
Works on numpy arrays and on TensorFlow tensors; a batch without spatial axes (a
fully connected model's codes) passes through."""
from __future__ import annotations

import numpy as np

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def _transpose(x, axes):
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x.transpose(axes))
    import tensorflow as tf

    return tf.transpose(x, axes)


def _spatial(x) -> bool:
    return len(x.shape) == 4


def to_model_layout(x, data_format: str):
    """NHWC (n, H, W, C) -> the model's layout: (n, C, H, W) for channels_first."""
    return _transpose(x, NHWC_TO_NCHW) if data_format == "channels_first" and _spatial(x) else x


def to_nhwc(x, data_format: str):
    """The model's layout -> NHWC (n, H, W, C)."""
    return _transpose(x, NCHW_TO_NHWC) if data_format == "channels_first" and _spatial(x) else x


def shape_to_nhwc(shape, data_format: str) -> tuple:
    """One image's or code's shape in the model's layout -> NHWC order."""
    shape = tuple(shape)
    return (*shape[1:], shape[0]) if data_format == "channels_first" and len(shape) == 3 else shape
