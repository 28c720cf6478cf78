"""A TensorFlow Datasets image dataset as a data source, streamed: its labels are read
once (8 bytes an image, the images left encoded), its images read and decoded by
tf.data as training goes, never held whole in memory. Any dataset with an image
feature, at its own size and colour (--image_size / --channels convert it as they do a
folder's images).

Splits: validation is the first round(N * 5,000 / 60,000) examples of TFDS's 'train',
train the rest, test TFDS's 'test' (MNIST: 55,000 / 5,000 / 10,000, as always). The
examples are read in TFDS's own order (unshuffled files, read one after another), so
the slice 'train[a:b]' holds the same images as positions a..b-1 of the whole split.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .sources import Split, Splits, StreamedImages, validation_count

if TYPE_CHECKING:
    import tensorflow as tf

# The most a shuffle buffer of encoded images holds: MNIST's training split whole (about
# 300 bytes an image), CIFAR-10's about 29,000 of 45,833 (2.3 kB).
SHUFFLE_BUFFER_BYTES = 64 * 2**20


class TfdsImages(StreamedImages):
    """The images of one TFDS split (StreamedImages: indexing reads just the stretch of
    the split those lie in). `positions`: the examples' indices in the TFDS split, ascending. No random
    access: training shuffles the stream (dataset)."""

    def __init__(self, source: "TfdsSource", split: str, positions: np.ndarray, shape):
        self.source, self.split = source, split
        self.positions = np.asarray(positions, np.int64)
        self.image_shape = tuple(shape)
        self._kept = None

    def __len__(self) -> int:
        return len(self.positions)

    def subset(self, kept) -> "TfdsImages":
        """The examples that `kept` (a boolean mask or indices) chooses, still unread."""
        return TfdsImages(self.source, self.split, self.positions[kept], self.image_shape)

    def fingerprint(self, digest) -> None:
        """Feeds `digest` (a hashlib object) what the images are: the dataset, its
        version, the split and the examples (the cache's name)."""
        builder = self.source.builder
        digest.update(f"{builder.name}\0{builder.version}\0{self.source.image_key}\0"
                      f"{self.split}\n".encode())
        digest.update(self.positions.tobytes())

    def _read(self, indices: np.ndarray) -> np.ndarray:
        chosen = self.positions[indices]
        wanted = np.unique(chosen)  # read in the split's order, then put as asked
        images = TfdsImages(self.source, self.split, wanted, self.image_shape).dataset()
        images = np.concatenate([batch.numpy() for batch in images.batch(256)])
        return images[np.searchsorted(wanted, chosen)]

    def dataset(self, shuffle: bool = False, seed=None, reshuffle: bool = False
                ) -> "tf.data.Dataset":
        """uint8 (H, W, C) images, decoded in parallel: in order, or shuffled from `seed`
        (anew on every pass with `reshuffle`). The split is read in order only, not by
        index, so the shuffle is a buffer of at most SHUFFLE_BUFFER_BYTES of images, still
        encoded (filling it reads them, decodes none): a whole split where it fits, else
        a looser shuffle than a permutation. TFDS stores a split's examples in an order
        shuffled once, when it prepared them."""
        import tensorflow as tf

        if not len(self.positions):
            return tf.data.Dataset.from_tensor_slices(np.zeros(self.shape, np.uint8))
        first, end = int(self.positions[0]), int(self.positions[-1]) + 1
        encoded = self.source.encoded(self.split, first, end)
        if end - first != len(self.positions):  # a subset: skip the others undecoded
            if self._kept is None:  # one tensor (a byte an example) for every epoch
                kept = np.zeros(end - first, bool)
                kept[self.positions - first] = True
                self._kept = tf.constant(kept)
            kept = self._kept
            # The count stays known (Keras warns of a validation set of unknown length).
            encoded = encoded.enumerate().filter(lambda i, _: tf.gather(kept, i)).map(
                lambda _, image: image).apply(
                tf.data.experimental.assert_cardinality(len(self.positions)))
        if shuffle:
            buffer = SHUFFLE_BUFFER_BYTES // self.source.example_bytes(self.image_shape)
            encoded = encoded.shuffle(min(len(self), max(1, int(buffer))), seed=seed,
                                      reshuffle_each_iteration=reshuffle)
        source, shape = self.source, self.image_shape
        return encoded.map(lambda image: source.decode(image, shape),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TfdsSource:
    """One TFDS dataset's builder and the feature its images are in."""

    def __init__(self, builder, image_key: str):
        self.builder, self.image_key = builder, image_key

    def _read(self, split: str) -> "tf.data.Dataset":
        import tensorflow_datasets as tfds

        # Unshuffled files read one at a time (not interleaved): TFDS's own order, in
        # which a slice 'train[a:b]' is positions a..b-1 of the whole 'train'.
        return self.builder.as_dataset(
            split=split, shuffle_files=False,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(interleave_cycle_length=1))

    def example_bytes(self, shape) -> float:
        """About how much one encoded example holds: the prepared files' size per
        example, or, where TFDS does not say, an image of `shape` decoded."""
        info = self.builder.info
        examples = sum(split.num_examples for split in info.splits.values())
        return info.dataset_size / examples if info.dataset_size and examples \
            else math.prod(shape)

    def encoded(self, split: str, first: int, end: int) -> "tf.data.Dataset":
        """The encoded images of examples first..end-1 of `split`."""
        images = self._read(f"{split}[{first}:{end}]").map(lambda ex: ex[self.image_key])
        # Held to the count asked for, whatever the reader gives (a mocked TFDS, as in
        # the tests, ignores the slice).
        return images.take(end - first)

    def decode(self, encoded, shape) -> "tf.Tensor":
        """One encoded image -> uint8 of `shape`: TFDS stores 8- and 16-bit images as
        PNG or JPEG bytes, prepared as any image file is (preparation.prepare_image)."""
        import tensorflow as tf

        from ..preparation import fit_pixels, prepare_image

        feature = self.builder.info.features[self.image_key]
        if feature.dtype != tf.float32:
            return prepare_image(encoded, shape)
        # Float images (one channel, bit-cast into a PNG's four) only TFDS decodes.
        image = tf.image.convert_image_dtype(feature.decode_example(encoded), tf.uint8,
                                             saturate=True)
        return fit_pixels(image, shape)

    def labels(self, split: str, label_key: str | None) -> np.ndarray:
        """The int64 labels of `split` (-1 each without a label feature), the images
        left encoded."""
        import tensorflow as tf

        examples = self._read(split)
        labels = examples.map(lambda ex: tf.cast(ex[label_key], tf.int64) if label_key
                              else tf.constant(-1, tf.int64))
        batches = [batch.numpy() for batch in labels.batch(65_536)]
        return np.concatenate(batches) if batches else np.zeros(0, np.int64)


def image_and_label_keys(features, name: str) -> tuple[str, str | None]:
    """The top-level feature of the images ('image', else the only image feature) and of
    the class labels ('label', else the only class feature; None: none)."""
    import tensorflow_datasets as tfds

    def of(kind):
        return [key for key, feature in features.items() if isinstance(feature, kind)]

    images, labels = of(tfds.features.Image), of(tfds.features.ClassLabel)
    if not images:
        raise DataError(f"TensorFlow Datasets {name!r} has no image feature (it has "
                        f"{', '.join(features.keys())}): give an image dataset")
    image = "image" if "image" in images else images[0]
    if len(images) > 1 and image != "image":
        raise DataError(f"TensorFlow Datasets {name!r} has several image features "
                        f"({', '.join(images)}) and none named 'image': which to train on "
                        "is not clear")
    label = "label" if "label" in labels else labels[0] if len(labels) == 1 else None
    return image, label


def image_shape(feature, image_size, channels, name: str) -> tuple[int, int, int]:
    """The images' shape after --image_size / --channels: (H, W, C); DataError where the
    dataset's images vary in size (or colour) and the flag that fixes it is not given."""
    height, width, have = feature.shape
    if image_size is None and (height is None or width is None):
        raise DataError(f"the images of {name!r} differ in size (TFDS gives "
                        f"{height or '?'}x{width or '?'}): give --image_size HxW")
    if channels is None and have is None:
        raise DataError(f"the images of {name!r} differ in colour: give --channels 1 or 3")
    if have is not None and have > 4:
        raise DataError(f"the images of {name!r} have {have} channels: only grey, RGB and "
                        "their alpha are read")
    # Alpha is dropped: 2 channels are grey, 4 RGB.
    return (*(image_size or (height, width)), channels or (have - 1 if have % 2 == 0 else have))


def load_tfds(name: str, image_size=None, channels=None) -> Splits:
    """The splits of the TFDS dataset `name` (downloaded and prepared if needed), streamed."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name)
    image_key, label_key = image_and_label_keys(builder.info.features, name)
    shape = image_shape(builder.info.features[image_key], image_size, channels, name)
    builder.download_and_prepare()
    known = builder.info.splits  # empty where TFDS does not know the split names
    for split in ("train", "test"):
        if known and split not in known:
            raise DataError(f"TensorFlow Datasets {name!r} has no {split!r} split (it has "
                            f"{', '.join(known.keys())}): give a dataset with 'train' and "
                            "'test', or a folder of images")
    source = TfdsSource(builder, image_key)
    train_labels, test_labels = source.labels("train", label_key), source.labels("test", label_key)
    if len(train_labels) < 2:
        raise DataError(f"TensorFlow Datasets {name!r} has fewer than 2 training images: "
                        "nothing to split")
    n_val = validation_count(len(train_labels))
    positions = np.arange(len(train_labels))

    def split(tfds_split, chosen, labels):
        return Split(TfdsImages(source, tfds_split, chosen, shape), labels)

    names = builder.info.features[label_key].names if label_key else None
    # A ClassLabel given only a count names its classes '0', '1', ...: no names.
    class_names = None if names == [str(i) for i in range(len(names or []))] else names
    return Splits(train=split("train", positions[n_val:], train_labels[n_val:]),
                  validation=split("train", positions[:n_val], train_labels[:n_val]),
                  test=split("test", np.arange(len(test_labels)), test_labels),
                  source=f"TensorFlow Datasets {name!r}", name=name,
                  class_names=class_names)
