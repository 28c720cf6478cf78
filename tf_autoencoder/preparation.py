"""One image preparation: encoded image bytes -> the model's uint8 (H, W, C) pixels, in
TensorFlow ops. Training, the cache, calibration, evaluate, embeddings, predict and the
export's image-bytes signatures all call prepare_image, so a file gets the same pixels,
and the same score, wherever it is read.

The steps, in order:
  decode    PNG (1 to 16 bits, palette, transparency), JPEG (grey, RGB, CMYK; libjpeg's
            accurate integer DCT, as Pillow), GIF (its first frame), BMP (1, 4, 8, 24 and
            32 bits per pixel; palettes read here, since TensorFlow's BMP decoder returns
            their indices); 16-bit samples are scaled to 8 bits (v / 257), not truncated
  orient    a JPEG's EXIF orientation applied, so a phone's portrait photo stands upright
  alpha     transparent areas composited onto white (BACKGROUND), as a viewer shows them
            on a white page; a BMP's fourth byte is alpha only when its header says so
  channels  grey <-> RGB as the model asks (grey: ITU-R 601-2 luma, as Pillow's)
  size      the largest centred crop of the target's aspect ratio, resized to H x W
            (bilinear, antialiased); an image already of that size is left as it is.
            prepare_unresized skips this step: the image at its own size, for scoring
            a large image in tiles (serving/tiles.py)

Pixel values stay floats from decoding to the end and are rounded once, so an image that
needs no conversion comes out exactly as decoded. The size step runs before the alpha and
channel steps, on premultiplied RGBA, which gives the same result (fit says why). A
folder whose headers show simpler files is read by prepare_simple or prepare_plain
(READERS), which give the same pixels with fewer steps.
"""
from __future__ import annotations

import tensorflow as tf

from .images import Header, describe_size

# What transparent pixels become: white, in 0..255.
BACKGROUND = 255.0
# The formats told apart by their first bytes.
_PNG, _JPEG, _GIF, _BMP = b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM"
_PNG_BIT_DEPTH = 24  # in the IHDR chunk, which follows the 8-byte signature
# BMP header fields (offsets in the file): BITMAPFILEHEADER is 14 bytes, then the DIB
# header, whose size says which version it is (40: BITMAPINFOHEADER, 108: V4, 124: V5).
_BMP_PIXELS_AT, _BMP_DIB_SIZE, _BMP_WIDTH, _BMP_HEIGHT = 10, 14, 18, 22
_BMP_BITS, _BMP_COMPRESSION, _BMP_COLOURS, _BMP_ALPHA_MASK = 28, 30, 46, 66
_BI_BITFIELDS = 3
# An EXIF block's IFD0 entries looked at for the orientation tag (it is usually among the
# first ten).
_EXIF_ENTRIES = 64
_ORIENTATION_TAG = 0x0112

# The preparation is written in graph ops throughout (tf.cond, tf.case, static Python
# branches), so AutoGraph has nothing to convert here; left to it, it transpiles every
# function below the first time a process traces one (the export, a folder's tf.data
# map, predict), which cost seconds of CPU per command.
graph_ops_only = tf.autograph.experimental.do_not_convert


def _bytes_at(data, position, length: int):
    """`length` bytes of `data` from `position` as uint8, zeros past the end: a header
    field read from a short or damaged file is 0, never an error."""
    padded = tf.strings.join([data, tf.constant(b"\0" * length)])
    position = tf.clip_by_value(tf.cast(position, tf.int32), 0, tf.strings.length(data))
    return tf.io.decode_raw(tf.strings.substr(padded, position, length), tf.uint8)


def _uint(data, position, length: int, big_endian=False):
    """An unsigned little- (or big-) endian integer of `length` bytes, as int64."""
    values = tf.cast(_bytes_at(data, position, length), tf.int64)
    weights = tf.constant([256 ** i for i in range(length)], tf.int64)
    little = tf.reduce_sum(values * weights)
    if big_endian is False:
        return little
    return tf.where(big_endian, tf.reduce_sum(values * weights[::-1]), little)


def _int32(data, position):
    value = _uint(data, position, 4)
    return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _opaque(rgb):
    """float32 (h, w, 3) -> (h, w, 4): RGB with an opaque alpha channel."""
    return tf.concat([rgb, tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0), 255.0)], -1)


def _decode_png(data):
    # 8-bit files as four channels: libpng expands grey, palettes and transparency itself.
    # 16-bit ones as 16 bits, scaled (v / 257), not truncated; 1- to 4-bit ones as they
    # are, since libpng does not scale their grey to 0..255 when it expands it to RGB.
    depth = _uint(data, _PNG_BIT_DEPTH, 1)
    return tf.switch_case(tf.where(depth == 8, 0, tf.where(depth == 16, 1, 2)), [
        lambda: tf.cast(tf.io.decode_png(data, 4), tf.float32),
        lambda: _rgba(tf.cast(tf.io.decode_png(data, dtype=tf.uint16), tf.float32) / 257.0),
        lambda: _rgba(tf.cast(tf.io.decode_png(data), tf.float32))])


def _rgba(image):
    """float32 (h, w, 1..4: grey, grey + alpha, RGB, RGBA) -> (h, w, 4) RGBA."""
    grey = image[..., :1]
    return tf.switch_case(tf.shape(image)[-1] - 1, [
        lambda: _opaque(tf.tile(grey, [1, 1, 3])),
        lambda: tf.concat([tf.tile(grey, [1, 1, 3]), image[..., 1:2]], -1),
        lambda: _opaque(image[..., :3]),
        lambda: image[..., :4]])


def _decode_jpeg(data):
    # INTEGER_ACCURATE: libjpeg's default, which Pillow uses; TensorFlow's default (the
    # fast DCT) differs from it by up to 7 levels. Grey and CMYK come out as RGB.
    image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
    return _opaque(tf.cast(_orient(image, jpeg_orientation(data)), tf.float32))


def _decode_gif(data):
    # The first frame, as a viewer shows it still.
    frame = tf.io.decode_gif(_gif_transparency_as_background(data))[0]
    return _opaque(tf.cast(frame, tf.float32))


# ITU-R 601-2 luma, as Pillow's "L": these sum to 1, so grey stays exactly grey
# (tf.image.rgb_to_grayscale's 0.2989, 0.5870, 0.1140 sum to 0.9999).
_LUMA = (0.299, 0.587, 0.114)
# One-byte strings by value: a byte computed in the graph, back into a string.
_BYTES = [bytes([i]) for i in range(256)]


def _replace(data, position, new):
    """`data` with the bytes at `position` replaced by `new` (a string tensor)."""
    end = position + tf.cast(tf.strings.length(new), tf.int64)
    return tf.strings.join([tf.strings.substr(data, 0, tf.cast(position, tf.int32)), new,
                            tf.strings.substr(data, tf.cast(end, tf.int32), -1)])


def _gif_transparency_as_background(data):
    """A GIF whose first frame has a transparent colour, rewritten so that this colour is
    opaque white (BACKGROUND): TensorFlow's decoder leaves transparent pixels black and
    returns no alpha, and this is the alpha rule for GIF's on-or-off transparency."""
    screen = _uint(data, 10, 1)  # logical screen flags: a global colour table, its size
    global_table = tf.bitwise.bitwise_and(screen, 0x80) != 0
    after = 13 + tf.where(global_table,
                          3 * tf.bitwise.left_shift(tf.constant(2, tf.int64),
                                                    tf.bitwise.bitwise_and(screen, 7)), 0)
    rest = tf.strings.substr(data, tf.cast(tf.minimum(after, tf.cast(
        tf.strings.length(data), tf.int64)), tf.int32), -1)
    parts = tf.strings.split(rest, sep=b"\x21\xf9\x04", maxsplit=1)  # graphic control
    control = after + tf.cast(tf.strings.length(parts[0]), tf.int64)
    flags = _uint(data, control + 3, 1)
    transparent = tf.logical_and(tf.size(parts) > 1, tf.bitwise.bitwise_and(flags, 1) != 0)
    index = _uint(data, control + 6, 1)
    frame = control + 8  # the image descriptor that the control block precedes
    local_table = tf.logical_and(tf.equal(_uint(data, frame, 1), 0x2C),
                                 tf.bitwise.bitwise_and(_uint(data, frame + 9, 1), 0x80) != 0)
    table = tf.where(local_table, frame + 10, 13)
    has_table = tf.logical_or(local_table, global_table)

    def rewritten():
        white = tf.strings.join([tf.constant(bytes([int(BACKGROUND)]))] * 3)
        opaque = _replace(data, control + 3, tf.gather(_BYTES, tf.bitwise.bitwise_and(flags, 0xFE)))
        return _replace(opaque, table + 3 * index, white)

    return tf.cond(tf.logical_and(transparent, has_table), rewritten, lambda: data)


def _decode_bmp(data):
    bits = _uint(data, _BMP_BITS, 2)
    return tf.cond(bits <= 8, lambda: _decode_bmp_palette(data, bits),
                   lambda: _decode_bmp_rgb(data))


def _decode_bmp_rgb(data):
    image = tf.cast(tf.io.decode_bmp(data), tf.float32)  # 24 bits: BGR; 32: BGRX or BGRA
    # A 32-bit BMP's fourth byte is alpha only if BI_BITFIELDS names an alpha mask (V4/V5
    # headers); in a plain 32-bit BMP it is unused, and 0 in most files.
    has_alpha = tf.reduce_all([tf.shape(image)[-1] == 4,
                               tf.equal(_uint(data, _BMP_COMPRESSION, 4), _BI_BITFIELDS),
                               _uint(data, _BMP_DIB_SIZE, 4) >= 56,
                               _uint(data, _BMP_ALPHA_MASK, 4) != 0])
    return tf.concat([image[..., :3], tf.where(has_alpha, image[..., -1:], 255.0)], -1)


def _decode_bmp_palette(data, bits):
    """A BMP of 1, 4 or 8 bits per pixel: each pixel an index into the colour table."""
    width = _int32(data, _BMP_WIDTH)
    height = _int32(data, _BMP_HEIGHT)  # > 0: rows stored bottom-up
    rows = tf.abs(height)
    colours = _uint(data, _BMP_COLOURS, 4)
    colours = tf.where(colours == 0, tf.bitwise.left_shift(tf.constant(1, tf.int64), bits),
                       colours)
    table = tf.reshape(_bytes_at(data, 14 + _uint(data, _BMP_DIB_SIZE, 4), 4 * 256), (256, 4))
    table = tf.reverse(table[:, :3], [1])  # BGR0 -> RGB
    # The table holds `colours` entries; an index past them reads black, as Pillow does.
    table = table * tf.cast(tf.range(256, dtype=tf.int64)[:, None] < colours, tf.uint8)
    stride = (width * bits + 31) // 32 * 4  # each row padded to 4 bytes
    packed = tf.reshape(_pixel_bytes(data, stride * rows), (rows, stride))
    per_byte = 8 // bits
    shifts = tf.cast(8 - bits * (tf.range(per_byte) + 1), tf.uint8)
    mask = tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), bits) - 1, tf.uint8)
    indices = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(packed[..., None], shifts), mask)
    indices = tf.reshape(indices, (rows, -1))[:, :width]
    indices = tf.reverse(indices, tf.boolean_mask([0], [height > 0]))
    return _opaque(tf.cast(tf.gather(table, tf.cast(indices, tf.int32)), tf.float32))


def _pixel_bytes(data, length):
    """The `length` bytes of a BMP's pixel array (an error if the file is shorter)."""
    start = tf.cast(_uint(data, _BMP_PIXELS_AT, 4), tf.int32)
    pixels = tf.strings.substr(data, start, tf.cast(length, tf.int32))
    tf.debugging.assert_equal(tf.strings.length(pixels), tf.cast(length, tf.int32),
                              message="BMP pixel data is truncated")
    return tf.io.decode_raw(pixels, tf.uint8)


@graph_ops_only
def jpeg_orientation(data):
    """A JPEG's EXIF orientation (1..8; 1, upright, without a valid one), read from the
    TIFF header of its APP1 'Exif' segment, which the Exif standard puts right after the
    start marker (after a JFIF APP0 segment in some files). No search of the file: read
    at fixed offsets, which a tf.data map does at little cost per image."""
    app0 = tf.equal(_uint(data, 2, 2, True), 0xFFE0)
    app1 = tf.where(app0, 4 + _uint(data, 4, 2, True), 2)  # where the APP1 marker may be
    exif = tf.logical_and(tf.equal(_uint(data, app1, 2, True), 0xFFE1),
                          tf.equal(tf.strings.substr(data, tf.cast(tf.minimum(
                              app1 + 4, tf.cast(tf.strings.length(data), tf.int64)), tf.int32),
                              6), b"Exif\0\0"))
    tiff = app1 + 10  # offsets in the TIFF block count from here
    big = tf.equal(_uint(data, tiff, 2, True), 0x4D4D)  # "MM": big-endian
    ifd = tiff + _uint(data, tiff + 4, 4, big)
    count = tf.minimum(_uint(data, ifd, 2, big), _EXIF_ENTRIES)
    entries = tf.reshape(_bytes_at(data, ifd + 2, 12 * _EXIF_ENTRIES), (_EXIF_ENTRIES, 12))
    entries = tf.cast(entries[:count], tf.int64)
    first, second = entries[:, 0], entries[:, 1]
    tags = tf.where(big, first * 256 + second, first + second * 256)
    values = tf.where(big, entries[:, 8] * 256 + entries[:, 9], entries[:, 8] + entries[:, 9] * 256)
    # The first orientation entry's value; 1 without one.
    orientation = tf.concat([tf.boolean_mask(values, tf.equal(tags, _ORIENTATION_TAG)),
                             tf.constant([1], tf.int64)], 0)[0]
    valid = tf.logical_and(exif, tf.logical_and(orientation >= 1, orientation <= 8))
    return tf.where(valid, orientation, tf.constant(1, tf.int64))


def _orient(image, orientation):
    """Turns an image as EXIF orientation 1..8 asks (what Pillow's exif_transpose does):
    5..8 transpose it, then rows and columns are reversed as the orientation says."""
    sideways = orientation >= 5
    image = tf.transpose(image, tf.where(sideways, [1, 0, 2], [0, 1, 2]))
    flip_rows = tf.reduce_any(tf.equal(orientation, tf.constant([3, 4, 7, 8], tf.int64)))
    flip_columns = tf.reduce_any(tf.equal(orientation, tf.constant([2, 3, 6, 7], tf.int64)))
    return tf.reverse(image, tf.boolean_mask([0, 1], [flip_rows, flip_columns]))


@graph_ops_only
def decode_rgba(data):
    """Encoded image bytes (PNG, JPEG, GIF or BMP) -> float32 (h, w, 4) RGBA in 0..255,
    upright. InvalidArgumentError for bytes that are none of these, or damaged."""
    head = tf.strings.substr(data, 0, 4)
    is_png = tf.equal(head, _PNG)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 2), _JPEG)
    is_gif = tf.equal(head, _GIF)
    is_bmp = tf.equal(tf.strings.substr(head, 0, 2), _BMP)

    def unknown():
        known = tf.reduce_any([is_png, is_jpeg, is_gif, is_bmp])  # False here, told at run time
        with tf.control_dependencies([tf.debugging.Assert(known, [
                "Unknown image file format: PNG, JPEG, GIF or BMP expected"])]):
            return tf.zeros((1, 1, 4))

    # One switch (tf.case would nest a conditional per format, each costing a tf.data map
    # time); the first true of these, the last (unknown) when none is.
    branch = tf.argmax(tf.stack([is_jpeg, is_png, is_gif, is_bmp, True]), output_type=tf.int32)
    image = tf.switch_case(branch, [lambda: _decode_jpeg(data), lambda: _decode_png(data),
                                    lambda: _decode_gif(data), lambda: _decode_bmp(data), unknown])
    return tf.ensure_shape(image, (None, None, 4))


@graph_ops_only
def fit(image, shape: tuple[int, int, int]):
    """float32 (h, w, 4) RGBA, or (h, w, 3) opaque RGB, in 0..255 -> uint8 (H, W, C) of
    `shape`: the centred crop of the target's aspect ratio resized to H x W, alpha
    composited onto BACKGROUND, channels converted, rounded once; H, W None: the image's
    own size, not resized (prepare_unresized). Resizing is linear, so
    it runs on premultiplied RGBA before the composite and the grey conversion: the same
    result as compositing first, with those steps on the small image. An opaque image
    gives the same pixels as RGBA or as RGB (prepare_simple relies on it)."""
    height, width, channels = shape
    if image.shape[-1] == 4:
        alpha = image[..., 3:] / 255.0
        image = tf.concat([image[..., :3] * alpha, alpha], -1)  # premultiplied
    if height is not None:
        size = tf.shape(image)[:2]
        image = tf.cond(tf.reduce_all(size == (height, width)), lambda: image,
                        lambda: _crop_resize(image, height, width))
    rgb = image[..., :3]
    if image.shape[-1] == 4:
        # Opaque areas stay exactly as they are: resizing an alpha of 1 gives 1 to within
        # float rounding, which would add a trace of background.
        clear = 1.0 - image[..., 3:]
        rgb += BACKGROUND * tf.where(clear < 1e-5, 0.0, clear)
    pixels = tf.tensordot(rgb, _LUMA, 1)[..., None] if channels == 1 else rgb
    pixels = tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)
    return tf.ensure_shape(pixels, shape)


@graph_ops_only
def fit_pixels(image, shape: tuple[int, int, int]):
    """Decoded uint8 grey or RGB pixels (h, w, 1 or 3, known when traced) -> uint8
    (H, W, C) of `shape`, as prepare_image fits what it decodes."""
    image = tf.cast(image, tf.float32)
    return fit(tf.tile(image, [1, 1, 3]) if image.shape[-1] == 1 else image, shape)


def crop_box(h, w, height: int, width: int, minimum=min, maximum=max):
    """The largest box of the aspect ratio height / width centred in an image of h x w:
    (top, left, crop_h, crop_w). Python ints, or tensors with minimum=tf.minimum and
    maximum=tf.maximum: the one formula, for the crop and for mapping back from it."""
    crop_h = maximum(minimum(h, (w * height) // width), 1)
    crop_w = maximum(minimum(w, (h * width) // height), 1)
    return (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w


def _crop_resize(image, height: int, width: int):
    top, left, crop_h, crop_w = crop_box(tf.shape(image)[0], tf.shape(image)[1], height, width,
                                         tf.minimum, tf.maximum)
    image = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
    return tf.image.resize(image, (height, width), antialias=True)


def to_input_pixel(row: int, column: int, image_size: tuple[int, int],
                   shape: tuple[int, int, int]) -> tuple[int, int]:
    """The pixel of the upright input image (image_size: its height, width) at whose place
    pixel (row, column) of its prepared (H, W, C) image lies: the inverse of the crop and
    resize, pixel centres to pixel centres."""
    height, width = shape[:2]
    h, w = image_size
    top, left, crop_h, crop_w = crop_box(h, w, height, width)
    if (h, w) == (height, width):  # not resized
        return row, column
    return (min(h - 1, top + int((row + 0.5) * crop_h / height)),
            min(w - 1, left + int((column + 0.5) * crop_w / width)))


@graph_ops_only
def prepare_image(data, shape: tuple[int, int, int], max_pixels: int | None = None):
    """Encoded image bytes (a scalar string tensor) -> uint8 (H, W, C) of `shape`: the one
    preparation (this module's docstring). max_pixels: refuse (InvalidArgumentError) an
    image of more pixels, told by its header before decoding (files are checked by
    images.check_pixels instead, which reads the header with Pillow)."""
    if max_pixels is None:
        return fit(decode_rgba(data), shape)
    height, width = encoded_size(data)
    check = tf.debugging.assert_less_equal(
        height * width, tf.constant(max_pixels, tf.int64),
        message=f"the image has more than {max_pixels:,} pixels, the limit")
    with tf.control_dependencies([check]):
        return fit(decode_rgba(tf.identity(data)), shape)


@graph_ops_only
def prepare_unresized(data, channels: int, max_pixels: int | None = None):
    """prepare_image without the size step: encoded bytes -> uint8 (h, w, channels) at
    the image's own (upright) size, decoded, alpha composited and channels converted as
    prepare_image does it (the same code)."""
    return prepare_image(data, (None, None, channels), max_pixels)


@graph_ops_only
def encoded_size(data):
    """(height, width) as the header of encoded PNG, JPEG, GIF or BMP bytes says (0, 0 for
    others), int64, without decoding the pixels."""
    head = tf.strings.substr(data, 0, 4)
    png = (_uint(data, 20, 4, True), _uint(data, 16, 4, True))  # IHDR, big-endian
    gif = (_uint(data, 8, 2), _uint(data, 6, 2))
    bmp = (tf.abs(_int32(data, _BMP_HEIGHT)), tf.abs(_int32(data, _BMP_WIDTH)))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1]

    zero = tf.constant(0, tf.int64)
    return tf.case([(tf.equal(head, _PNG), lambda: png),
                    (tf.equal(tf.strings.substr(head, 0, 2), _JPEG), jpeg),
                    (tf.equal(head, _GIF), lambda: gif),
                    (tf.equal(tf.strings.substr(head, 0, 2), _BMP), lambda: bmp)],
                   default=lambda: (zero, zero), exclusive=True)


@graph_ops_only
def prepare_simple(data, shape: tuple[int, int, int]):
    """prepare_image for an 8-bit grey or RGB PNG or JPEG, upright and opaque, of any size
    (the file's header says so: images.Header.simple): the same pixels, without the steps
    such a file does not need; each op of a tf.data map costs time per image, and small
    images spend most of theirs there."""
    image = tf.cond(tf.equal(tf.strings.substr(data, 0, 2), _JPEG),
                    lambda: tf.io.decode_jpeg(data, 3, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_png(data, 3))
    return fit(tf.cast(image, tf.float32), shape)


@graph_ops_only
def prepare_plain(data, shape: tuple[int, int, int]):
    """prepare_image for an 8-bit grey or RGB PNG or JPEG, upright, already of `shape`
    (the file's header says so: images.Header.simple): the same pixels without the
    conversions, which took half the decoding time of small PNG files."""
    image = tf.cond(tf.equal(tf.strings.substr(data, 0, 2), _JPEG),
                    lambda: tf.io.decode_jpeg(data, channels=shape[2],
                                              dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_png(data, channels=shape[2]))
    return tf.ensure_shape(image, shape)


# How the files of a folder are read, by what their headers say of all of them:
# "plain" (prepare_plain), "simple" (prepare_simple) or "any" (prepare_image).
READERS = {"plain": prepare_plain, "simple": prepare_simple, "any": prepare_image}


@graph_ops_only
def prepare_file(path, shape: tuple[int, int, int], reader: str = "any"):
    """An image file (a scalar string tensor: its path) -> uint8 (H, W, C), read by
    READERS[reader]: the same pixels each way, for the files it applies to."""
    return READERS[reader](tf.io.read_file(path), shape)


@graph_ops_only
def to_model_input(images):
    """uint8 pixels -> float32 in [0, 1], what the model takes."""
    return tf.cast(images, tf.float32) / 255.0


def describe_preparation(header: Header, shape: tuple[int, int, int]) -> list[str]:
    """What prepare_image changes in the image whose file has `header`, for a model of
    `shape` (H, W, C): one short note per step that does something."""
    height, width, channels = shape
    notes = []
    if header.orientation != 1:
        notes.append(f"turned upright (EXIF orientation {header.orientation})")
    if header.deep:
        notes.append("16-bit values scaled to 8 bits")
    if header.transparent:
        notes.append("transparency composited onto white")
    if header.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if header.channels == 3 and channels == 1:
        notes.append("colour converted to greyscale")
    elif header.channels == 1 and channels == 3:
        notes.append("greyscale converted to RGB")
    if (header.height, header.width) != (height, width):
        cropped = header.height * width != header.width * height
        crop = "centre cropped to the model's aspect ratio and " if cropped else ""
        notes.append(f"{crop}resized from {describe_size(header.height, header.width)} to "
                     f"{describe_size(height, width)}")
    return notes
