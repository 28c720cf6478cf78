"""Encoder and decoder builders, Keras functional style: tensor in, tensor out.

Shapes are written NHWC for the post's model ([16, 8, 8] filters, 28x28x1 images);
with data_format="channels_first" the channel axis comes right after the batch axis.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from ..config import ConfigError, check_encoder_fits, check_sizes


class _ChannelsFirstBias:
    """Adds a conv layer's bias along axis 1 in channels_first, whatever the shapes.

    Keras 3's TensorFlow backend turns `ops.add(x, bias)` into `tf.nn.bias_add` and
    guesses the layout from shapes: for a channels_first x whose width equals its
    channel count (the post's 8x8x8 maps) it adds the bias along the width. Putting the
    bias first keeps it a plain broadcast add, so both layouts compute the same thing.
    """

    def call(self, inputs):
        if self.data_format == "channels_last" or not self.use_bias:
            return super().call(inputs)
        outputs = ops.add(ops.reshape(self.bias, (1, self.filters, 1, 1)), self._convolve(inputs))
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class Conv2D(_ChannelsFirstBias, layers.Conv2D):
    def _convolve(self, inputs):
        return self.convolution_op(inputs, self.kernel)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class Conv2DTranspose(_ChannelsFirstBias, layers.Conv2DTranspose):
    """Keras' Conv2DTranspose, computed as a sub-pixel convolution when that is faster.

    In bfloat16 on a CPU, oneDNN fuses a plain convolution with its bias and ReLU (and
    the bias gradient into the weight gradient), while a transposed convolution leaves
    them to slow unfused bfloat16 ops. So in bfloat16 the post's 3x3 stride-2 'same'
    layers compute as `sub_pixel_conv_transpose`: same weights, same function, faster
    training. In float32 it is slower, so the plain op stays (benchmarks/sub_pixel.py
    measures both; the figures are in benchmarks/RESULTS.md).
    """

    SUB_PIXEL_DTYPES = ("bfloat16",)  # compute dtypes that take the sub-pixel path

    def call(self, inputs):
        if not self._sub_pixel():
            return super().call(inputs)
        return sub_pixel_conv_transpose(inputs, self.kernel, self.bias if self.use_bias else None,
                                        self.activation)

    def _sub_pixel(self):
        return (self.compute_dtype in self.SUB_PIXEL_DTYPES and self.data_format == "channels_last"
                and self.kernel_size == (3, 3) and self.strides == (2, 2)
                and self.padding == "same" and self.dilation_rate == (1, 1)
                and self.output_padding is None
                # elementwise, so applying it before depth_to_space changes nothing
                and self.activation in (keras.activations.relu, keras.activations.linear))

    def _convolve(self, inputs):
        return ops.conv_transpose(inputs, self.kernel, strides=self.strides, padding=self.padding,
                                  output_padding=self.output_padding,
                                  data_format=self.data_format, dilation_rate=self.dilation_rate)


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class UpSampling2D(layers.UpSampling2D):
    """Keras' UpSampling2D, its output's static shape kept: its nearest-neighbour path
    (ops.repeat) loses the height in a graph with a dynamic batch, and TFLite's converter
    then cannot convert the convolution that follows (--upsample resize)."""

    def call(self, inputs):
        outputs = super().call(inputs)
        return ops.reshape(outputs, (-1, *self.compute_output_shape(inputs.shape)[1:]))


# The 3x3 kernel row (3: a zero row) that output phase p takes at row j of the 2x2
# window, for p, j = (0, 0), (0, 1), (1, 0), (1, 1). A 3x3 stride-2 'same' transposed
# conv gives out[2i] = x[i-1] k[2] + x[i] k[0] and out[2i+1] = x[i] k[1] along each axis.
_SUB_PIXEL_TAPS = [2, 0, 3, 1]


def sub_pixel_kernel(kernel):
    """A 3x3 stride-2 'same' transposed conv's kernel as the equivalent 2x2 conv's.

    kernel: (3, 3, out, in), Keras' Conv2DTranspose layout.  Returns (2, 2, in, 4 * out):
    output channel (2 * row phase + column phase) * out + c, as depth_to_space expects.
    """
    taps = ops.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])  # row and column 3 are zeros
    taps = ops.take(ops.take(taps, _SUB_PIXEL_TAPS, axis=0), _SUB_PIXEL_TAPS, axis=1)
    out_channels, in_channels = kernel.shape[2], kernel.shape[3]
    taps = ops.reshape(taps, (2, 2, 2, 2, out_channels, in_channels))  # p, j, q, l, out, in
    taps = ops.transpose(taps, (1, 3, 5, 0, 2, 4))  # j, l, in, p, q, out
    return ops.reshape(taps, (2, 2, in_channels, 4 * out_channels))


def sub_pixel_conv_transpose(inputs, kernel, bias=None, activation=None):
    """activation(ops.conv_transpose(inputs, kernel, strides=2, padding="same") + bias) for
    a 3x3 kernel, computed as a 2x2 conv over the inputs padded at the top and left, whose
    four output phases depth_to_space interleaves (the equivalence Shi et al. describe in
    "Is the deconvolution layer the same as a convolutional layer?", arXiv:1609.07009).
    Bias and activation come before depth_to_space, next to the conv.

    inputs: (batch, h, w, in), channels_last.  kernel: (3, 3, out, in).  bias: (out,).
    Returns (batch, 2h, 2w, out).
    """
    padded = ops.pad(inputs, [[0, 0], [1, 0], [1, 0], [0, 0]])
    outputs = ops.conv(padded, sub_pixel_kernel(kernel))
    if bias is not None:
        outputs = ops.add(outputs, ops.tile(bias, [4]))  # the same bias in every phase
    if activation is not None:
        outputs = activation(outputs)  # elementwise, so it commutes with depth_to_space
    return ops.depth_to_space(outputs, 2)


def _kernel_settings(weight_decay):
    # slim's l2_regularizer(w) in the original adds w * sum(k**2) / 2; Keras's L2(l)
    # adds l * sum(k**2), hence the halving. He (variance scaling) init as in slim.
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    return dict(kernel_initializer="he_normal", kernel_regularizer=regularizer)


def _dropout(x, keep_prob, name):
    """Dropout with the original's keep probability; None or 1 adds nothing."""
    if keep_prob is None or keep_prob >= 1:
        return x
    return layers.Dropout(1 - keep_prob, name=name)(x)


def _spatial(shape, data_format):
    """(batch, H, W, C) or (batch, C, H, W) -> (H, W)."""
    return tuple(shape[2:4]) if data_format == "channels_first" else tuple(shape[1:3])


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def conv_encoder(inputs, num_filters, *, data_format="channels_last", weight_decay=None,
                 dropout=None, downsample="pool", convs_per_block=2, kernel_size=3):
    """Stacks one block per entry of `num_filters`: `convs_per_block` ReLU convs of
    kernel_size x kernel_size ('same'), then a halving.

    downsample="pool" halves with 2x2 max pooling (the post); "strided" with a ReLU conv
    of stride 2 and `filters` filters instead, as in the all-convolutional net of
    Springenberg et al., "Striving for Simplicity" (ICLR workshop 2015). With
    convs_per_block=0 a block is that strided conv alone.
    A block whose input has an odd height or width pads it with one row/column of
    zeros at the bottom/right first, as the original does, so 28 -> 14 -> 7 (8) -> 4.

    inputs: (batch, H, W, C).  Returns the last map: (batch, H', W', num_filters[-1]) with
    H' = H halved (rounding up) once per block; (batch, 4, 4, 8) for the post's model.
    """
    check_sizes("num_filters", num_filters)
    _check_choice("downsample", downsample, ("pool", "strided"))
    if convs_per_block == 0 and downsample == "pool":
        raise ConfigError("a pooling block needs at least one conv: convs_per_block >= 1")
    check_encoder_fits(*_spatial(inputs.shape, data_format), num_filters, kernel_size)
    conv = dict(data_format=data_format, **_kernel_settings(weight_decay))

    x = inputs
    for block, filters in enumerate(num_filters):
        h, w = _spatial(x.shape, data_format)
        if h % 2 or w % 2:
            x = layers.ZeroPadding2D(((0, h % 2), (0, w % 2)), data_format=data_format,
                                     name=f"block{block}_pad")(x)
        for i in range(convs_per_block):
            x = Conv2D(filters, kernel_size, padding="same", activation="relu",
                       name=f"block{block}_conv{i}", **conv)(x)
            x = _dropout(x, dropout, name=f"block{block}_dropout{i}")
        if downsample == "pool":
            x = layers.MaxPooling2D(2, data_format=data_format, name=f"block{block}_pool")(x)
        else:
            x = Conv2D(filters, kernel_size, strides=2, padding="same", activation="relu",
                       name=f"block{block}_down", **conv)(x)
    return x


def conv_decoder(code, num_filters, output_shape, *, data_format="channels_last",
                 weight_decay=None, dropout=None, upsample="transpose", kernel_size=3,
                 output_layer=True):
    """Upsamples `code` back to an image: the mirror of `conv_encoder`.

    One doubling per entry of `num_filters` (given in decoding order, i.e. the encoder's
    list reversed), then a centred crop: (batch, 4, 4, 8) -> 8 -> 16 -> 32 -> crop 28.
    Each doubling is one of
      "transpose"      a kernel_size x kernel_size stride-2 ReLU transposed conv (the post);
      "transpose_2x2"  a 2x2 stride-2 ReLU transposed conv (each input pixel becomes 2x2);
      "resize"         nearest-neighbour upsampling, then a ReLU conv: no checkerboard
                       artifacts (Odena, Dumoulin and Olah, "Deconvolution and
                       Checkerboard Artifacts", Distill 2016).
    output_layer=True: block i has num_filters[i] filters and a linear kernel_size 'same'
    transposed conv maps the last to the image's channels (the post).  False: block i has
    the filters of the encoder block before it, num_filters[i + 1], and the last block
    itself outputs the image's channels, linear.

    code: (batch, h, w, k).  output_shape: one image's shape in `data_format` order,
    e.g. (28, 28, 1).  Returns logits of shape (batch, *output_shape).
    """
    check_sizes("num_filters", num_filters)
    _check_choice("upsample", upsample, ("transpose", "transpose_2x2", "resize"))
    if data_format == "channels_first":
        channels, height, width = output_shape
    else:
        height, width, channels = output_shape
    conv = dict(data_format=data_format, **_kernel_settings(weight_decay))
    widths = list(num_filters) if output_layer else [*num_filters[1:], channels]
    x = code
    for block, filters in enumerate(widths):
        last = block == len(widths) - 1 and not output_layer  # gives the logits
        activation = None if last else "relu"
        if upsample == "resize":
            x = UpSampling2D(2, data_format=data_format, interpolation="nearest",
                             name=f"block{block}_resize")(x)
            x = Conv2D(filters, kernel_size, padding="same", activation=activation,
                       name=f"block{block}_conv", **conv)(x)
        else:
            size = 2 if upsample == "transpose_2x2" else kernel_size
            x = Conv2DTranspose(filters, size, strides=2, padding="same", activation=activation,
                                name=f"block{block}_deconv", **conv)(x)
        if not last:
            x = _dropout(x, dropout, name=f"block{block}_dropout")
    if output_layer:
        x = Conv2DTranspose(channels, kernel_size, padding="same", name="linear", **conv)(x)
    h, w = _spatial(x.shape, data_format)
    if h < height or w < width:
        raise ConfigError(
            f"decoder output {h}x{w} is smaller than the requested {height}x{width}: "
            "the code is too small for this many upsampling blocks")
    if (h, w) != (height, width):
        top, left = (h - height) // 2, (w - width) // 2
        x = layers.Cropping2D(((top, h - height - top), (left, w - width - left)),
                              data_format=data_format, name="crop")(x)
    return x


def flat_code(features, code_size, *, data_format="channels_last", weight_decay=None,
              name="code", kernel_initializer="he_normal"):
    """A linear bottleneck to a flat code of `code_size` values.

    features: (batch, h, w, k) maps, through a conv whose kernel covers the whole map
    ('valid', so 1x1 out: a dense layer over the map, with the same weights), or
    (batch, k) vectors, through a dense layer.  Returns (batch, code_size).
    """
    settings = dict(_kernel_settings(weight_decay), kernel_initializer=kernel_initializer)
    if len(features.shape) == 2:
        return layers.Dense(code_size, name=name, **settings)(features)
    x = Conv2D(code_size, _spatial(features.shape, data_format), padding="valid",
               data_format=data_format, name=name, **settings)(features)
    return layers.Flatten(data_format=data_format, name=f"{name}_flat")(x)


def expand_code(code, shape, *, data_format="channels_last", weight_decay=None, dropout=None):
    """The decoder's mirror of `flat_code`: (batch, code_size) -> ReLU features of `shape`
    (one example's, e.g. (7, 7, 32) or (32,)), through a transposed conv whose kernel
    covers the whole map ('valid', from a 1x1 map) or a dense layer."""
    settings = _kernel_settings(weight_decay)
    if len(shape) == 1:
        x = layers.Dense(shape[0], activation="relu", name="code_expand", **settings)(code)
    else:
        one_pixel = (code.shape[-1], 1, 1) if data_format == "channels_first" else (1, 1, code.shape[-1])
        x = layers.Reshape(one_pixel, name="code_map")(code)
        filters = shape[0] if data_format == "channels_first" else shape[-1]
        x = Conv2DTranspose(filters, _spatial((None, *shape), data_format), padding="valid",
                            activation="relu", data_format=data_format, name="code_expand",
                            **settings)(x)
    return _dropout(x, dropout, name="code_expand_dropout")


def gaussian_heads(features, code_channels, *, data_format="channels_last", weight_decay=None,
                   code_size=None):
    """Linear layers giving the mean and log-variance of a Gaussian code (for a VAE).

    features: (batch, h, w, k), e.g. conv_encoder's output.  Returns (mean, log_var):
    each (batch, h, w, code_channels) through 1x1 convs, or with `code_size` each
    (batch, code_size) through `flat_code`.
    """
    if code_size:
        return tuple(flat_code(features, code_size, data_format=data_format,
                               weight_decay=weight_decay, name=name,
                               kernel_initializer="glorot_uniform")
                     for name in ("code_mean", "code_log_var"))
    settings = dict(_kernel_settings(weight_decay), kernel_initializer="glorot_uniform")
    mean = Conv2D(code_channels, 1, data_format=data_format, name="code_mean",
                  **settings)(features)
    log_var = Conv2D(code_channels, 1, data_format=data_format, name="code_log_var",
                     **settings)(features)
    return mean, log_var


def fc_encoder(inputs, hidden_units, *, data_format="channels_last", weight_decay=None,
               dropout=None):
    """Flattens the images and applies one ReLU dense layer per entry of `hidden_units`.

    inputs: (batch, H, W, C).  Returns the code: (batch, hidden_units[-1]).
    """
    check_sizes("hidden_units", hidden_units)
    # Flatten in NHWC order whatever the layout, so both layouts share weights.
    x = layers.Flatten(data_format=data_format, name="flatten")(inputs)
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense{i}",
                         **_kernel_settings(weight_decay))(x)
        x = _dropout(x, dropout, name=f"dropout{i}")
    return x


def fc_decoder(code, hidden_units, output_shape, *, data_format="channels_last",
               weight_decay=None, dropout=None):
    """ReLU dense layers for `hidden_units` (decoding order), then a linear layer to the pixels.

    The original decodes [128, 64, 32] codes with hidden_units [64, 128].
    code: (batch, k).  output_shape: one image's shape in `data_format` order.
    Returns logits of shape (batch, *output_shape).
    """
    check_sizes("hidden_units", hidden_units, allow_empty=True)
    x = code
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense{i}",
                         **_kernel_settings(weight_decay))(x)
        x = _dropout(x, dropout, name=f"dropout{i}")
    x = layers.Dense(math.prod(output_shape), name="linear", **_kernel_settings(weight_decay))(x)
    if data_format == "channels_first":
        channels, height, width = output_shape
        x = layers.Reshape((height, width, channels), name="unflatten")(x)
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)
    else:
        x = layers.Reshape(tuple(output_shape), name="unflatten")(x)
    return x


@keras.saving.register_keras_serializable(package="tf_autoencoder")
class PixelLogits(layers.Layer):
    """Pixels -> logits: log(p / (1 - p)) of p clipped to [EPS, 1 - EPS]. sigmoid gives
    the clipped pixels back, so a path that computes pixels (the linear one) can join
    the logits the model outputs. Computes in float32 whatever the precision: in
    bfloat16, 1 - EPS rounds to 1, and the log-odds of a pixel at 1 is infinite (its
    gradient NaN)."""

    EPS = 1e-4

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, pixels):
        clipped = ops.clip(pixels, self.EPS, 1 - self.EPS)
        # log(1 - p), not log1p(-p): tf2onnx has no Log1p, and the clip keeps it exact enough.
        return ops.log(clipped) - ops.log(1 - clipped)


def linear_encoder(images, code_size, *, data_format="channels_last", name="linear_encode"):
    """images -> (batch, code_size), one dense layer on the pixels in NHWC order (so the
    same weights serve both layouts). No weight decay: it holds principal components."""
    x = images
    if data_format == "channels_first":
        x = layers.Permute((2, 3, 1), name=f"{name}_nhwc")(x)
    x = layers.Flatten(name=f"{name}_flat")(x)
    return layers.Dense(code_size, name=name)(x)


def linear_decoder(code, output_shape, *, data_format="channels_last", name="linear_decode"):
    """The mirror of `linear_encoder`: (batch, code_size) -> pixels of `output_shape`
    (one image's, in `data_format`), one dense layer."""
    if data_format == "channels_first":
        channels, height, width = output_shape
    else:
        height, width, channels = output_shape
    x = layers.Dense(height * width * channels, name=name)(code)
    x = layers.Reshape((height, width, channels), name=f"{name}_image")(x)
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name=f"{name}_nchw")(x)
    return x
