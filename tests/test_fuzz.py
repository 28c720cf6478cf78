"""Property-based tests: the IDX reader on arbitrary bytes, the builders on arbitrary shapes."""
import gzip
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_autoencoder.data import sources

FAST = settings(max_examples=200, deadline=1000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def declared_shape(raw: bytes):
    """The shape an IDX header declares, or None if it is not a valid unsigned-byte header."""
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    return tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))


def numpy_can_hold(shape) -> bool:
    """numpy refuses shapes whose non-zero sizes multiply past its index type, empty or not."""
    return math.prod(d for d in shape if d) <= np.iinfo(np.intp).max


def read_or_error(tmp_path, raw: bytes, gz: bool):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        return sources.read_idx(str(path))
    except sources.DataError:
        return None


def check(raw: bytes, array):
    """Either a DataError (None) or exactly the declared shape and the payload's bytes."""
    shape = declared_shape(raw)
    if array is None:
        assert (shape is None or len(raw) != 4 + 4 * len(shape) + math.prod(shape)
                or not numpy_can_hold(shape))
        return
    assert array.dtype == np.uint8 and array.shape == shape
    assert array.tobytes() == raw[4 + 4 * len(shape):]


@FAST
@given(raw=st.binary(max_size=64), gz=st.booleans())
def test_read_idx_on_random_bytes_returns_the_declared_shape_or_raises_data_error(tmp_path, raw, gz):
    check(raw, read_or_error(tmp_path, raw, gz))


@st.composite
def idx_like(draw):
    """A valid-looking header (sometimes with a wrong byte) and a payload near its size."""
    ndim = draw(st.integers(0, 5))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)),
                         min_size=ndim, max_size=ndim))
    magic = bytes([0, 0, draw(st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0D])), ndim])
    if draw(st.booleans()):
        magic = bytes([draw(st.integers(0, 1))]) + magic[1:]
    header = magic + b"".join(d.to_bytes(4, "big") for d in dims)
    size = math.prod(dims) if all(d <= 6 for d in dims) else draw(st.integers(0, 50))
    size = max(0, size + draw(st.sampled_from([0, 0, 0, -1, 1, 3])))
    return header + draw(st.binary(min_size=size, max_size=size))


@FAST
@given(raw=idx_like(), gz=st.booleans())
def test_read_idx_on_random_headers_returns_the_declared_shape_or_raises_data_error(tmp_path, raw, gz):
    check(raw, read_or_error(tmp_path, raw, gz))


@FAST
@given(raw=idx_like(), cut=st.integers(0, 30), flip=st.integers(0, 200), xor=st.integers(0, 255))
def test_read_idx_on_damaged_gzip_returns_the_original_or_raises_data_error(tmp_path, raw, cut,
                                                                         flip, xor):
    packed = bytearray(gzip.compress(raw))
    packed[flip % len(packed)] ^= xor
    path = tmp_path / "f.gz"
    path.write_bytes(bytes(packed[:len(packed) - cut]))
    try:
        array = sources.read_idx(str(path))
    except sources.DataError:
        return
    check(raw, array)


# Building a model takes a fraction of a second: few examples, no deadline.
@settings(max_examples=12, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), channels=st.integers(1, 3),
       num_filters=st.lists(st.integers(1, 8), min_size=1, max_size=4),
       data_format=st.sampled_from(["channels_last", "channels_first"]))
def test_conv_autoencoder_output_shape_equals_input_shape(height, width, channels, num_filters,
                                                          data_format):
    import keras

    from tf_autoencoder import conv_decoder, conv_encoder

    shape = (height, width, channels) if data_format == "channels_last" else (channels, height, width)
    images = keras.Input(shape)
    poolable = all(math.ceil(min(height, width) / 2**block) >= 2 for block in range(len(num_filters)))
    if not poolable or min(height, width) < 3:  # the default 3x3 kernel needs 3x3 images
        with pytest.raises(ValueError, match="too small" if not poolable else "kernel_size 3"):
            conv_encoder(images, num_filters, data_format=data_format)
        return
    code = conv_encoder(images, num_filters, data_format=data_format)
    logits = conv_decoder(code, num_filters[::-1], shape, data_format=data_format)
    assert tuple(logits.shape) == (None, *shape)


@settings(max_examples=8, deadline=None)
@given(shape=st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(1, 3)),
       hidden_units=st.lists(st.integers(1, 64), min_size=1, max_size=4))
def test_fc_autoencoder_output_shape_equals_input_shape(shape, hidden_units):
    import keras

    from tf_autoencoder import fc_decoder, fc_encoder

    images = keras.Input(shape)
    logits = fc_decoder(fc_encoder(images, hidden_units), hidden_units[:-1][::-1], shape)
    assert tuple(logits.shape) == (None, *shape)
