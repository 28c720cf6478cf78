"""Latent codes -> files TensorBoard's Projector tab reads (tensorboard.plugins.projector).

log_dir/
  embedding-1.index, .data-*   a TF2 checkpoint holding the (N, D) variable `embedding`
  checkpoint                   its index, so the projector finds it wherever log_dir moves
  metadata.tsv                 a header, then one row per point: label, test image index
  sprite.png                   the N images as thumbnails, row by row (images.sprite_image)
  projector_config.pbtxt       ties the three together
  events.out.*                 a text summary saying what the points are; it also makes
                               log_dir a run, which the projector needs inside a logdir
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins import projector

from ..files import write_text_atomic
from ..images import sprite_image, write_png

CHECKPOINT_NAME = "embedding"
# The key tf.train.Checkpoint(embedding=variable) gives the variable in the checkpoint.
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
CONFIG_FILE = "projector_config.pbtxt"


def write_projector(log_dir: str, codes: np.ndarray, labels: np.ndarray, images: np.ndarray,
                    description: str = "test images", class_names: list[str] | None = None
                    ) -> str:
    """Writes what the Projector tab needs to show `codes`, one point per image.

    codes: (N, ...) floats, flattened to (N, D).  labels: (N,) ints.  images: (N, H, W, C)
    NHWC, uint8 or floats in [0, 1], shown as the points' thumbnails.  class_names: what
    each label means, shown instead of the number; a label of -1 (no label) shows as "-".  Every file is
    written whole before the config that points to it.  Returns the checkpoint's path.
    """
    codes = np.asarray(codes, np.float32).reshape(len(codes), -1)
    if not len(codes) == len(labels) == len(images):
        raise ValueError(f"{len(codes)} codes, {len(labels)} labels and {len(images)} images: "
                         "need one of each per point")
    os.makedirs(log_dir, exist_ok=True)
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(codes, name="embedding"))
    manager = tf.train.CheckpointManager(checkpoint, log_dir, max_to_keep=1,
                                         checkpoint_name=CHECKPOINT_NAME)
    path = manager.save()

    def name(label: int) -> str:
        if label < 0:
            return "-"
        return class_names[label] if class_names else str(label)

    rows = [f"{name(int(label))}\t{index}" for index, label in enumerate(labels)]
    write_text_atomic(os.path.join(log_dir, METADATA_FILE), "\n".join(["label\tindex", *rows]) + "\n")
    sprite, (height, width) = sprite_image(images)
    write_png(os.path.join(log_dir, SPRITE_FILE), sprite)

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.metadata_path = METADATA_FILE
    embedding.sprite.image_path = SPRITE_FILE
    embedding.sprite.single_image_dim.extend([width, height])
    write_text_atomic(os.path.join(log_dir, CONFIG_FILE), text_format.MessageToString(config))

    with tf.summary.create_file_writer(log_dir).as_default():
        tf.summary.text("embedding", f"Latent codes of {len(codes):,} {description}, "
                        f"{codes.shape[1]} values each: see the Projector tab.", step=0)
    return path
