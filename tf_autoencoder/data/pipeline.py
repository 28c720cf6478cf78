"""Splits -> tf.data pipelines of (input, clean target) batches in the model's layout,
with the denoising noise; and the same noisy inputs in memory.

A split's images are a uint8 array in memory, or files (folder.FileImages) or a TFDS
split (tfds_images.TfdsImages) that tf.data reads and decodes in parallel as the batches
are needed. The same seed gives the same batches: for an array and files the order is a
permutation of the indices, drawn alike for both; a TFDS split, read in order only, is
shuffled by a seeded buffer of bounded size. An array's layout is changed once, on the
whole array (layout.py); files' batch by batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..model.layout import to_model_layout

if TYPE_CHECKING:  # imported for real only where a pipeline is built
    import tensorflow as tf


def noisy_inputs(images: np.ndarray, noise_factor: float, rng: np.random.Generator | None = None,
                 data_format: str = "channels_last") -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) -> (inputs, clean), float32 in [0, 1] in `data_format`, in memory.

    inputs = clip(clean + noise_factor * N(0, 1), 0, 1), as training adds noise; the noise
    is drawn from `rng` in NHWC order, so one seed gives the same noisy images in either
    layout. Without noise (no `rng` needed), inputs is `clean` itself.
    """
    clean = images.astype(np.float32) / 255
    if noise_factor <= 0:
        clean = to_model_layout(clean, data_format)
        return clean, clean
    inputs = np.clip(clean + noise_factor * rng.standard_normal(clean.shape), 0, 1)
    return to_model_layout(inputs.astype(np.float32), data_format), to_model_layout(clean, data_format)


def make_dataset(images: np.ndarray, *, batch_size: int, training: bool, noise_factor: float = 0.0,
                 data_format: str = "channels_last", seed: int | None = None,
                 new_noise_each_pass: bool = True, replicas: int = 1) -> "tf.data.Dataset":
    """Batches of (input, target) float32 pairs in [0, 1]; the target is the clean image.

    images: uint8 (N, H, W, C).  With noise_factor F, input = clip(clean + F * N(0, 1), 0, 1),
    drawn anew every epoch (every pass over the dataset), or with new_noise_each_pass
    False the same on every pass, from `seed` alone.  Training shuffles every epoch and
    drops the last partial batch, as the original.  Unshuffled, every image comes once,
    in order, and every batch holds at least `replicas` images (see evaluation_batches):
    under a tf.distribute strategy each replica gets a share of every batch.
    """
    # Imported here: reading data and reporting bad input should not wait for TensorFlow.
    import tensorflow as tf

    clean = _image_batches(images, data_format, batch_size, shuffle=training, seed=seed,
                           reshuffle=True, replicas=replicas)
    # Dataset.random draws new numbers on every pass, so noise changes each epoch
    # while staying reproducible for a given seed.
    noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=new_noise_each_pass)
    return _for_replicas(_pairs(clean, noise_factor, noise_seeds))


def evaluation_batches(count: int, batch_size: int, replicas: int = 1) -> list[int]:
    """The sizes of the batches that evaluate `count` images in order: batch_size each,
    and the rest, unless the rest is smaller than `replicas` (a replica given no image
    fails in oneDNN's convolutions, and a mean over none is NaN): then it joins the batch
    before, which holds at most batch_size + replicas - 1. A split of fewer images than
    replicas cannot be shared (check_replicas refuses it)."""
    sizes = [batch_size] * (count // batch_size)
    rest = count % batch_size
    if rest and rest < replicas and sizes:
        sizes[-1] += rest
    elif rest:
        sizes.append(rest)
    return sizes


def check_replicas(replicas: int, batch_size: int, splits: dict[str, int]) -> None:
    """Raises ConfigError unless every batch can give each of `replicas` replicas an
    image: batch_size at least `replicas`; DataError unless each split of `splits`
    (name -> number of images) has at least `replicas` images."""
    from ..errors import ConfigError, DataError

    if batch_size < replicas:
        raise ConfigError(f"--batch_size {batch_size} is smaller than the {replicas} replicas, "
                        "which each need a share of every batch: raise --batch_size")
    for name, count in splits.items():
        if count < replicas:
            raise DataError(f"the {name} split has {count} images, fewer than the {replicas} "
                            "replicas, which each need a share of every batch: train on fewer "
                            "replicas or more data")


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

    pixels = images if _streamed(images) else tf.constant(to_model_layout(images, data_format))
    stream = None
    for e in epochs:
        batches = _image_batches(pixels, data_format, batch_size, shuffle=True, seed=seed + e,
                                 reshuffle=False)
        noise_seeds = tf.data.Dataset.random(seed=seed + e, rerandomize_each_iteration=False)
        epoch = _pairs(batches, noise_factor, noise_seeds)
        stream = epoch if stream is None else stream.concatenate(epoch)
    return _for_replicas(stream)


def _image_batches(images, data_format: str, batch_size: int, *, shuffle: bool, seed,
                   reshuffle: bool, replicas: int = 1) -> "tf.data.Dataset":
    """Batches of float32 images in [0, 1] in the model's layout.

    images: uint8 (N, H, W, C) array, or a tensor already in the model's layout, or
    folder.FileImages, or cache.CachedImages.  An array stays uint8 in memory (a float32
    copy would be 4x larger); each batch is gathered by index and scaled at once, as is
    each batch of a cache file. Files are read and decoded one by one, in parallel, in
    the order of the indices.  shuffle: a new
    permutation on every pass (reshuffle) or the same one, from `seed`, and the last
    partial batch dropped (for training, as the original); unshuffled, every image in
    order, in batches of evaluation_batches(count, batch_size, replicas).
    """
    import tensorflow as tf

    if _files(images):
        return _file_batches(images, data_format, batch_size, shuffle=shuffle, seed=seed,
                             reshuffle=reshuffle, replicas=replicas)
    if _cached(images):
        transpose = data_format == "channels_first"
        gather = lambda index: _to_layout(images.gather(index), transpose)  # noqa: E731
    else:
        pixels = images if tf.is_tensor(images) else tf.constant(to_model_layout(images,
                                                                                 data_format))
        gather = lambda index: tf.gather(pixels, index)  # noqa: E731
    count = int(images.shape[0])
    if shuffle:
        indices = _order(count, batch_size, seed, reshuffle)
    else:
        sizes = evaluation_batches(count, batch_size, replicas)
        indices = tf.data.Dataset.range(count).batch(batch_size)
        if sizes and sizes[-1] > batch_size:  # the short rest joined the batch before it
            whole = sum(sizes[:-1])
            indices = tf.data.Dataset.range(whole).batch(batch_size).concatenate(
                tf.data.Dataset.range(whole, count).batch(sizes[-1]))
    return indices.map(lambda index: tf.cast(gather(index), tf.float32) / 255.0,
                       num_parallel_calls=tf.data.AUTOTUNE)


def _files(images) -> bool:
    """Whether `images` are read as the batches need them (files, or a TFDS split)."""
    from .folder import FileImages
    from .tfds_images import TfdsImages

    return isinstance(images, (FileImages, TfdsImages))


def _cached(images) -> bool:
    from .cache import CachedImages

    return isinstance(images, CachedImages)


def _streamed(images) -> bool:
    """Whether the images are read as the batches are needed (not held in memory)."""
    return _files(images) or _cached(images)


def _to_layout(batch, transpose: bool):
    """An NHWC batch in the model's layout (NCHW when `transpose`)."""
    import tensorflow as tf

    return tf.transpose(batch, (0, 3, 1, 2)) if transpose else batch


def _order(count: int, batch_size: int, seed, reshuffle: bool) -> "tf.data.Dataset":
    """Batches of shuffled indices (int64 (batch_size,)), the last partial one dropped:
    a new permutation on every pass (reshuffle) or the same one, from `seed`."""
    import tensorflow as tf

    def permuted_batches(seed_pair):
        # One op draws the whole permutation: a shuffle buffer of all the indices hands
        # them out one at a time, which took a few per cent of a training step's CPU.
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64),
                                                         seed=seed_pair)
        steps = count // batch_size
        return tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[:steps * batch_size], (steps, batch_size)))

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)
    return seeds.batch(2).take(1).flat_map(permuted_batches).apply(
        tf.data.experimental.assert_cardinality(count // batch_size))  # for progress bars


def _file_batches(files, data_format: str, batch_size: int, *, shuffle: bool, seed,
                  reshuffle: bool, replicas: int = 1) -> "tf.data.Dataset":
    """_image_batches of files, the same batches as of the same images in an array; or
    of a TFDS split, shuffled by a buffer."""
    import tensorflow as tf

    from .tfds_images import TfdsImages

    count = len(files)
    if shuffle and isinstance(files, TfdsImages):
        # Read in order only, not by index: shuffled by a seeded buffer (TfdsImages.dataset).
        batches = files.dataset(shuffle=True, seed=seed, reshuffle=reshuffle).batch(
            batch_size, drop_remainder=True).apply(
            tf.data.experimental.assert_cardinality(count // batch_size))
    elif shuffle:
        indices = _order(count, batch_size, seed, reshuffle).unbatch()
        batches = files.dataset(indices).batch(batch_size, drop_remainder=True).apply(
            tf.data.experimental.assert_cardinality(count // batch_size))
    else:
        sizes = evaluation_batches(count, batch_size, replicas)
        images = files.dataset()
        batches = images.batch(batch_size)
        if sizes and sizes[-1] > batch_size:  # the short rest joined the batch before it
            whole = sum(sizes[:-1])
            batches = images.take(whole).batch(batch_size).concatenate(
                images.skip(whole).batch(sizes[-1]))
    transpose = data_format == "channels_first"
    return batches.map(lambda x: tf.cast(_to_layout(x, transpose), tf.float32) / 255.0,
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
