"""Compile, restore, fit, evaluate, save: one training run in a model_dir.

model_dir/
  config.json       the full resolved configuration (what data was actually used, too)
  checkpoints/      one TF checkpoint per epoch (weights, optimizer, epoch): resume point
  train/ validation/ projector/ events.out.*  TensorBoard logs (see summaries.py)
  model.keras       the final model
  history.csv       loss and metrics per epoch, training and validation
  test_metrics.json loss, RMSE, BCE, MSE on the test split
"""
from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from . import data as data_lib
from .config import Config, write_text_atomic
from .metrics import make_loss, make_metrics
from .model_dir import CHECKPOINT_DIR, CONFIG_FILE, FINAL_MODEL, HISTORY, TEST_METRICS
from .models import build_autoencoder
from .summaries import tensorboard_callbacks, write_run_end


def compile_model(model: keras.Model, config: Config) -> None:
    """Adam with the original's schedule: lr x 0.96 every 1000 steps, staircase."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, config.lr_decay_steps, config.lr_decay_rate, staircase=True)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=make_loss(config.loss),
                  metrics=make_metrics())
    model.optimizer.build(model.trainable_variables)  # so a checkpoint restores its state now


def parameter_summary(model) -> str:
    """Every weight's name, shape and size, and the total (the original's PrintParameterSummary)."""
    rows = [(f"{part.name}/{w.path}", str(tuple(w.shape)), int(np.prod(w.shape)))
            for part in (model.encoder, model.decoder) for w in part.weights]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'weight':<{width}}  {'shape':<16} {'size':>9}"]
    lines += [f"{name:<{width}}  {shape:<16} {size:>9,}" for name, shape, size in rows]
    lines.append(f"{'total':<{width}}  {'':<16} {sum(r[2] for r in rows):>9,}")
    return "\n".join(lines)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state and the epoch counter after every epoch.

    tf.train.CheckpointManager writes the files first and then swaps the small
    `checkpoint` index file atomically, so a crash mid-save keeps the previous one.
    """

    def __init__(self, model: keras.Model, directory: str, max_to_keep: int = 3):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)

    def restore(self) -> int:
        """Restores the newest checkpoint, if any; returns the number of finished epochs."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def train(config: Config, splits: data_lib.Splits, log=print) -> dict:
    """Trains (or resumes) the run `config` describes on `splits`; returns the test metrics.

    `config` is validated, its data fields and seed set, and its model_dir checked
    (see cli.train_main).
    """
    keras.utils.set_random_seed(config.seed)
    model = build_autoencoder(config)
    compile_model(model, config)
    log(parameter_summary(model))

    os.makedirs(config.model_dir, exist_ok=True)
    checkpoint = EpochCheckpoint(model, os.path.join(config.model_dir, CHECKPOINT_DIR))
    initial_epoch = checkpoint.restore()
    if initial_epoch:
        log(f"Resuming from the end of epoch {initial_epoch} in {config.model_dir}")
    config.save(os.path.join(config.model_dir, CONFIG_FILE))

    def pipeline(split, training):
        # Resumed runs shift the seed so they do not replay the first epochs' shuffles.
        return data_lib.make_dataset(
            split.images, batch_size=config.batch_size, training=training,
            noise_factor=config.noise_factor, data_format=config.data_format,
            seed=config.seed + initial_epoch)

    callbacks = [
        checkpoint,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(config.model_dir, HISTORY), append=True),
        *tensorboard_callbacks(config, splits),
    ]

    if initial_epoch >= config.epochs:
        log(f"{config.model_dir} already holds {initial_epoch} epochs: nothing to train "
            "(raise --epochs to train longer)")
    else:
        model.fit(pipeline(splits.train, True), validation_data=pipeline(splits.validation, False),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  shuffle=False, verbose=1 if sys.stdout.isatty() else 2)

    test_metrics = model.evaluate(pipeline(splits.test, False), return_dict=True, verbose=0)
    test_metrics = {name: float(value) for name, value in test_metrics.items()}
    log("Test: " + ", ".join(f"{name} {value:.5f}" for name, value in test_metrics.items()))
    write_text_atomic(os.path.join(config.model_dir, TEST_METRICS),
                      json.dumps(test_metrics, indent=2) + "\n")
    write_run_end(model, config, splits, test_metrics, epoch=max(initial_epoch, config.epochs) - 1,
                  log=log)
    save_model_atomic(model, os.path.join(config.model_dir, FINAL_MODEL))
    log(f"Saved {os.path.join(config.model_dir, FINAL_MODEL)}")
    return test_metrics


def save_model_atomic(model: keras.Model, path: str) -> None:
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)
