"""Naming the file that broke a run: an image file deleted, cut short or changed since
the folder was listed, or a cache file damaged, whichever TensorFlow op met it (each
file is checked again after the failure); and the training files that no epoch reads,
decoded before training so that a damaged one among them is found too.
"""
from __future__ import annotations

import contextlib
import os

from ..errors import DataError
from ..model_dir import CHECKPOINT_DIR
from .cache import CachedImages, cache_file_damage
from .folder import SPLIT_NAMES, FileImages, first_bad_file
from .sources import Splits


@contextlib.contextmanager
def naming_damaged_files(splits, model_dir: str | None = None):
    """Turns the error of a TensorFlow op that met a file gone, cut short or changed
    since the data was listed (an image file, or a cache file) into a DataError naming
    it, found by checking each again; other errors pass as they are. model_dir: the
    run's, whose last checkpoint the message mentions where there is one."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError,
            tf.errors.DataLossError):
        error = damaged_data(splits, model_dir)
        if error is None:
            raise
        raise error from None


def damaged_data(splits, model_dir: str | None) -> DataError | None:
    """DataError naming the first damaged cache file or image file of the splits (each
    checked again: a pass over them); None if all are whole (the failure was another)."""
    for name in SPLIT_NAMES:
        images = getattr(splits, name).images
        if isinstance(images, CachedImages):
            damage = cache_file_damage(images.path, images.file_shape)
            if damage:
                return DataError(f"the cache file {images.path} is damaged ({damage}): run "
                                 "the command again, which decodes the images into it anew")
    bad = first_bad_file(splits) if splits.name == "folder" else None
    return bad and damaged_file_error(bad, model_dir)


def damaged_file_error(path: str, model_dir: str | None) -> DataError:
    """One line for an image file that was listed and cannot be read now."""
    kept = ""
    if model_dir and os.path.exists(os.path.join(model_dir, CHECKPOINT_DIR, "checkpoint")):
        kept = "the run keeps its last checkpoint; "
    if not os.path.exists(path):
        return DataError(f"{path} is gone (deleted or moved after the folder was listed): "
                         f"{kept}put it back, or run again to list the folder anew")
    return DataError(f"{path} cannot be decoded (its header reads, its pixels do not, or it "
                     f"changed after the folder was listed): {kept}remove or replace the "
                     "file, or pass --skip_bad_images")


def check_never_read(splits: Splits, batch_size: int, seed: int, epochs: range) -> None:
    """Decodes the training files that no epoch of `epochs` reads (each drops the last
    partial batch of its shuffle), so that a damaged one among them is named too:
    DataError naming it."""
    images = splits.train.images
    if not isinstance(images, FileImages):
        return
    from .pipeline import never_read

    unread = never_read(len(images), batch_size, seed, epochs)
    bad = images.subset(unread).bad_files() if len(unread) else []
    if bad:
        raise damaged_file_error(images.paths[unread[bad[0]]], None)
