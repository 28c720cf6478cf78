"""Splits -> tf.data pipelines of (input, clean target) batches in the model's layout,
with the denoising noise; and the same noisy inputs in memory.

A split's images are a uint8 array in memory, or files (folder.FileImages), a cache
file (cache.CachedImages) or a TFDS split (tfds_images.TfdsImages) that tf.data reads
(and decodes) in parallel as the batches are needed. The same seed gives the same
batches: for an array, files and a cache the order is a permutation of the indices,
drawn alike for all; a TFDS split, read in order only, is shuffled by a seeded buffer of
bounded size. An array's layout is changed once, on the whole array (layout.py); the
others' batch by batch.

Under a tf.distribute strategy of several replicas each worker builds its own pipeline,
given its tf.distribute.InputContext (`context`): it cuts every global batch's indices
into the replicas' shares before reading anything, and reads and decodes only its own
replicas' shares (_shares). A TFDS split, which has no indices, is read whole by every
worker, each keeping its replicas' shares of every batch (_stream_batches).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from ..model.layout import to_model_layout
from ..words import plural

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
                 new_noise_each_pass: bool = True, replicas: int = 1,
                 context: "tf.distribute.InputContext | None" = None) -> "tf.data.Dataset":
    """Batches of (input, target) float32 pairs in [0, 1]; the target is the clean image.

    images: uint8 (N, H, W, C).  With noise_factor F, input = clip(clean + F * N(0, 1), 0, 1),
    drawn anew every epoch (every pass over the dataset), or with new_noise_each_pass
    False the same on every pass, from `seed` alone.  Training shuffles every epoch and
    drops the last partial batch, as the original.  Unshuffled, every image comes once,
    in order, and every batch holds at least `replicas` images (see evaluation_batches):
    under a tf.distribute strategy each replica gets a share of every batch. With
    `context`, only the shares of this worker's replicas, a batch per replica (_shares).
    """
    # Imported here: reading data and reporting bad input should not wait for TensorFlow.
    import tensorflow as tf

    clean = _image_batches(images, data_format, batch_size, shuffle=training, seed=seed,
                           reshuffle=True, replicas=replicas, context=context)
    # Dataset.random draws new numbers on every pass, so noise changes each epoch
    # while staying reproducible for a given seed.
    noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=new_noise_each_pass)
    return _for_replicas(_pairs(clean, noise_factor, noise_seeds, context))


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
            raise DataError(f"the {name} split has {plural(count, 'image')}, fewer than the {replicas} "
                            "replicas, which each need a share of every batch: train on fewer "
                            "replicas or more data")


def make_training_epochs(images: np.ndarray, *, batch_size: int, epochs: range, seed: int,
                         noise_factor: float = 0.0, data_format: str = "channels_last",
                         context: "tf.distribute.InputContext | None" = None
                         ) -> "tf.data.Dataset":
    """Training batches of the epochs in `epochs`, one after another; fit it with
    steps_per_epoch = len(images) // batch_size.

    Epoch e is shuffled, and noised, from seed + e alone, not from how often the
    dataset was iterated before: under a tf.distribute strategy Keras' fit iterates its
    data once more, to build the model, which would shift every epoch's shuffle by one.
    So the same seed gives the same batches with and without a strategy, and a resumed
    run the batches the uninterrupted run had.  Batches as make_dataset(training=True),
    and with `context` this worker's replicas' shares of them.
    """
    import tensorflow as tf

    pixels = images if _streamed(images) else tf.constant(to_model_layout(images, data_format))
    stream = None
    for e in epochs:
        batches = _image_batches(pixels, data_format, batch_size, shuffle=True, seed=seed + e,
                                 reshuffle=False, context=context)
        noise_seeds = tf.data.Dataset.random(seed=seed + e, rerandomize_each_iteration=False)
        epoch = _pairs(batches, noise_factor, noise_seeds, context)
        stream = epoch if stream is None else stream.concatenate(epoch)
    return _for_replicas(stream)


def _image_batches(images, data_format: str, batch_size: int, *, shuffle: bool, seed,
                   reshuffle: bool, replicas: int = 1, context=None) -> "tf.data.Dataset":
    """Batches of float32 images in [0, 1] in the model's layout (with `context`, each
    with its place in its global batch: _shares).

    images: uint8 (N, H, W, C) array, or a tensor already in the model's layout, or
    folder.FileImages, cache.CachedImages or tfds_images.TfdsImages (_stream_batches).
    An array stays uint8 in memory (a float32 copy would be 4x larger); each batch is
    gathered by index and scaled at once, as is each batch of a cache file. Files are
    read and decoded one by one, in parallel, in the order of the indices.  shuffle: a
    new permutation on every pass (reshuffle) or the same one, from `seed`, and the last
    partial batch dropped (for training, as the original); unshuffled, every image in
    order, in batches of evaluation_batches(count, batch_size, replicas).  With
    `context`, the shares of this worker's replicas of those batches.
    """
    import tensorflow as tf

    if _in_order(images):
        return _stream_batches(images, data_format, batch_size, shuffle=shuffle, seed=seed,
                               reshuffle=reshuffle, replicas=replicas, context=context)
    if _by_index(images):
        count, read = len(images), _file_reader(images, data_format)
    elif _cached(images):
        count, read = len(images), _cache_reader(images, data_format)
    else:
        pixels = images if tf.is_tensor(images) else tf.constant(to_model_layout(images, data_format))
        count, read = int(pixels.shape[0]), _array_reader(pixels)
    # Runs of global batches of one size: (batches of indices, their size, how many).
    if shuffle:
        runs = [(_order(count, batch_size, seed, reshuffle), batch_size, count // batch_size)]
    else:
        sizes = evaluation_batches(count, batch_size, replicas)
        full = len(sizes) - int(bool(sizes) and sizes[-1] != batch_size)
        runs = [(tf.data.Dataset.range(full * batch_size).batch(batch_size), batch_size, full)]
        if full < len(sizes):  # a short rest, or one joined to the batch before it
            runs.append((tf.data.Dataset.range(full * batch_size, count).batch(sizes[-1]),
                         sizes[-1], 1))
    return functools.reduce(tf.data.Dataset.concatenate,
                            [_shares(indices, size, steps, read, context)
                             for indices, size, steps in runs])


def _shares(index_batches: "tf.data.Dataset", size: int, steps: int, read, context
            ) -> "tf.data.Dataset":
    """`steps` global batches of `size` indices -> (images, (start, size)) for each replica
    that this worker feeds, replica after replica: its share of each batch, the batch's
    images [start, start + n), which `read` reads alone. The noise is drawn for the whole
    batch and cut to the same place (_pairs), so that the replicas' shares add up to the
    batch one device trains on. Without `context`, the whole batches' images alone."""
    import tensorflow as tf

    if context is None:
        return read(index_batches, [size]).apply(
            tf.data.experimental.assert_cardinality(steps))  # for progress bars
    bounds = _replica_shares(size, context)
    indices = index_batches.flat_map(lambda batch: functools.reduce(
        tf.data.Dataset.concatenate,
        [tf.data.Dataset.from_tensors(batch[start:stop]) for start, stop in bounds]))
    places = tf.data.Dataset.from_tensor_slices(
        tf.constant([(start, size) for start, _ in bounds], tf.int64)).repeat()
    return tf.data.Dataset.zip(read(indices, [stop - start for start, stop in bounds]),
                               places).apply(
        tf.data.experimental.assert_cardinality(steps * len(bounds)))  # for progress bars


def _replica_shares(size: int, context) -> list[tuple[int, int]]:
    """(start, stop) in a global batch of `size` images of each replica that the worker of
    `context` (a tf.distribute.InputContext) feeds. The replicas' shares are contiguous,
    in replica order, and differ by at most one image."""
    replicas = context.num_replicas_in_sync

    def start(replica):
        return replica * (size // replicas) + min(replica, size % replicas)

    return [(start(r), start(r + 1)) for r in _replicas_fed(context)]


def _replicas_fed(context) -> range:
    """The replicas (numbered across all workers) that the worker of `context` feeds:
    every worker has as many (tf.distribute requires it)."""
    here = context.num_replicas_in_sync // context.num_input_pipelines
    return range(context.input_pipeline_id * here, (context.input_pipeline_id + 1) * here)


def _array_reader(pixels):
    """Batches of indices -> float32 batches of those images of `pixels` (uint8, the
    model's layout), gathered batch by batch."""
    import tensorflow as tf

    def read(indices, sizes):
        return indices.map(lambda index: tf.cast(tf.gather(pixels, index), tf.float32) / 255.0,
                           num_parallel_calls=tf.data.AUTOTUNE)
    return read


def _cache_reader(cached, data_format: str):
    """Batches of indices -> float32 batches of those images of a cache file, in the
    model's layout, read batch by batch."""
    import tensorflow as tf

    transpose = data_format == "channels_first"

    def read(indices, sizes):
        return indices.map(
            lambda index: tf.cast(_to_layout(cached.gather(index), transpose), tf.float32) / 255.0,
            num_parallel_calls=tf.data.AUTOTUNE)
    return read


def _file_reader(files, data_format: str):
    """Batches of indices (of the sizes `sizes`, cycled) -> float32 batches of those
    files, in the model's layout, each file decoded in parallel with the others."""
    import tensorflow as tf

    transpose = data_format == "channels_first"

    def read(indices, sizes):
        images = files.dataset(indices.unbatch())
        batches = (images.batch(sizes[0], drop_remainder=True) if len(set(sizes)) == 1
                   else images.batch(1).rebatch(sizes, drop_remainder=True))  # takes batches
        return batches.map(lambda x: tf.cast(_to_layout(x, transpose), tf.float32) / 255.0,
                           num_parallel_calls=tf.data.AUTOTUNE)
    return read


def _by_index(images) -> bool:
    """Whether `images` are files, read by index as the batches need them."""
    from .folder import FileImages

    return isinstance(images, FileImages)


def _in_order(images) -> bool:
    """Whether `images` are a TFDS split, read in order only, as the batches need them."""
    from .tfds_images import TfdsImages

    return isinstance(images, TfdsImages)


def _cached(images) -> bool:
    from .cache import CachedImages

    return isinstance(images, CachedImages)


def _streamed(images) -> bool:
    """Whether the images are read as the batches need them (not held in memory)."""
    from .sources import StreamedImages

    return isinstance(images, StreamedImages)


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
    return seeds.batch(2).take(1).flat_map(permuted_batches)


def never_read(count: int, batch_size: int, seed: int, epochs: range) -> np.ndarray:
    """The indices of the images that no epoch of `epochs` trains on (int64, sorted):
    each drops the last partial batch of its permutation (_order, seeded as
    make_training_epochs seeds it)."""
    read = np.zeros(count, bool)
    for e in epochs:
        for batch in _order(count, batch_size, seed + e, reshuffle=False).as_numpy_iterator():
            read[batch] = True
        if read.all():
            break
    return np.flatnonzero(~read)


def _stream_batches(images, data_format: str, batch_size: int, *, shuffle: bool, seed,
                    reshuffle: bool, replicas: int, context) -> "tf.data.Dataset":
    """_image_batches of a split read in order only (a TFDS split): shuffled by its
    seeded buffer (TfdsImages.dataset), or in order in batches of evaluation_batches.
    With `context`, every worker reads the global batches whole and keeps its replicas'
    shares of each, with their places, as _shares gives them."""
    import tensorflow as tf

    if shuffle:
        batches = images.dataset(shuffle=True, seed=seed, reshuffle=reshuffle).batch(
            batch_size, drop_remainder=True)
        steps = len(images) // batch_size
    else:
        sizes = evaluation_batches(len(images), batch_size, replicas)
        batches = images.dataset().batch(1).rebatch(sizes)  # cycles through the sizes once
        steps = len(sizes)
    transpose = data_format == "channels_first"
    batches = batches.map(lambda x: tf.cast(_to_layout(x, transpose), tf.float32) / 255.0,
                          num_parallel_calls=tf.data.AUTOTUNE)
    if context is None:
        return batches.apply(tf.data.experimental.assert_cardinality(steps))
    replicas_in_sync, fed = context.num_replicas_in_sync, _replicas_fed(context)

    def shares(batch):
        size = tf.shape(batch, out_type=tf.int64)[0]
        start = [r * (size // replicas_in_sync) + tf.minimum(tf.constant(r, tf.int64),
                                                             size % replicas_in_sync)
                 for r in range(fed.start, fed.stop + 1)]
        return functools.reduce(tf.data.Dataset.concatenate, [
            tf.data.Dataset.from_tensors((batch[start[i]:start[i + 1]],
                                          tf.stack([start[i], size])))
            for i in range(len(fed))])

    return batches.flat_map(shares).apply(
        tf.data.experimental.assert_cardinality(steps * len(fed)))


def _pairs(batches: "tf.data.Dataset", noise_factor: float, noise_seeds: "tf.data.Dataset",
           context=None):
    """Batches of clean images (with `context`, each with its place: _shares) -> (input,
    clean target), noised with one pair of `noise_seeds` (int64 scalars) per global batch
    when noise_factor > 0: each replica's share gets its place's part of the whole
    batch's noise."""
    import tensorflow as tf

    if noise_factor <= 0:
        return batches.map(lambda x, *place: (x, x))
    seeds = noise_seeds.batch(2)
    here = len(_replicas_fed(context)) if context else 1
    if here > 1:  # every share of a batch gets the batch's seeds
        seeds = seeds.flat_map(lambda pair: tf.data.Dataset.from_tensors(pair).repeat(here))

    def noisy(batch, pair):
        images, place = batch if context else (batch, None)
        return _add_noise(images, noise_factor, pair, place), images

    return tf.data.Dataset.zip(batches, seeds).map(noisy, num_parallel_calls=tf.data.AUTOTUNE)


def _for_replicas(pairs: "tf.data.Dataset") -> "tf.data.Dataset":
    """Prefetches. A dataset made without a `context` and handed to a tf.distribute
    strategy holds global batches, which the strategy splits across the replicas: each
    worker then runs the whole pipeline and keeps its share of every batch (DATA
    sharding). Training under several workers gives each its context instead."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return pairs.prefetch(tf.data.AUTOTUNE).with_options(options)


def _add_noise(images, noise_factor, seed, place=None):
    """images + noise_factor * their noise, clipped to [0, 1]. Their noise: that of the
    whole batch they are, or, given their place (start, size) in a global batch, their
    part of that batch's noise."""
    import tensorflow as tf

    shape = tf.shape(images, out_type=tf.int64)
    if place is None:
        noise = tf.random.stateless_normal(shape, seed=seed)
    else:
        noise = tf.random.stateless_normal(tf.concat([place[1:], shape[1:]], axis=0), seed=seed)
        noise = noise[place[0]:place[0] + shape[0]]
    return tf.clip_by_value(images + noise_factor * noise, 0.0, 1.0)
