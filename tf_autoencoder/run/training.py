"""Compile, restore, fit, evaluate, save: one training run in a model_dir.

model_dir/
  config.json       the full resolved configuration (what data was actually used, too)
  checkpoints/      ckpt-<step>: one per epoch and one at Ctrl-C (weights, optimizer, epoch)
  train/ validation/ projector/ events.out.*  TensorBoard logs (see summaries.py)
  model.keras       the final model
  history.csv       loss and metrics per epoch, training and validation
  test_metrics.json loss, RMSE, BCE, MSE on the test split, inputs with the run's noise
  export/<version>/ the final model as a SavedModel for serving (export.py)
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
import shutil
import signal
import sys
import tempfile
import threading

import keras
import numpy as np
import tensorflow as tf

from ..config import Config
from ..errors import Interrupted, RunError, TrainingDiverged
from .distribute import check_workers_agree, chief_value, is_chief
from ..serving.export import export_holding, export_saved_model
from ..files import fsync_dir, fsync_file, write_text_atomic
from ..model.metrics import make_loss, make_metrics
from ..model_dir import (CHECKPOINT_DIR, CONFIG_FILE, EXPORT_DIR, FINAL_MODEL, HISTORY,
                        TEST_METRICS)
from ..model.models import build_autoencoder, float32_twin
from ..data.pipeline import make_dataset, make_training_epochs
from ..data.sources import Splits
from .summaries import (read_test_metrics, tensorboard_callbacks, test_metrics_line,
                        write_run_end, write_test_metrics)


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
            for part in model.parts for w in part.weights]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'weight':<{width}}  {'shape':<16} {'size':>9}"]
    lines += [f"{name:<{width}}  {shape:<16} {size:>9,}" for name, shape, size in rows]
    lines.append(f"{'total':<{width}}  {'':<16} {sum(r[2] for r in rows):>9,}")
    return "\n".join(lines)




class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state and the epoch counter after every epoch, and
    stops training cleanly on Ctrl-C and on a NaN or Inf loss.

    Checkpoints are numbered by the optimizer step (`ckpt-<step>`). TensorFlow writes
    a checkpoint's files under a temporary name, renames them, and only then swaps the
    small `checkpoint` index file atomically, so a kill mid-save keeps the previous one
    as the newest; `restore` also falls back to an older checkpoint if the newest
    cannot be read.

    Ctrl-C (after `watch_interrupts`) is acted on at the next batch boundary: a
    checkpoint is saved there with the finished-epoch counter unchanged, so a rerun
    starts the interrupted epoch again from its first batch, from the weights and
    optimizer step reached when it was interrupted.  A non-finite loss or weights
    raise TrainingDiverged before anything is saved.

    `restore_from`, for workers other than the chief: restore the chief's checkpoints
    from there, and save to `directory` (a scratch directory; every worker must save,
    as MultiWorkerMirroredStrategy's saves need all of them).
    """

    def __init__(self, model: keras.Model, directory: str, max_to_keep: int = 3,
                 restore_from: str | None = None):
        super().__init__()
        self.directory = directory
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        # Steps taken in the unfinished epoch when a Ctrl-C checkpoint was saved; else 0.
        self.steps_into_epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="steps_into_epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              epoch=self.epoch,
                                              steps_into_epoch=self.steps_into_epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)
        self.restore_manager = self.manager if restore_from is None else (
            tf.train.CheckpointManager(self.checkpoint, restore_from, max_to_keep))
        self.interrupted = 0  # the signal that asked training to stop, once one came
        self.current_epoch = 0

    def restore(self, log=print) -> int:
        """Restores the newest readable checkpoint, if any; returns the number of finished
        epochs. Raises RunError if checkpoints exist but none can be read."""
        for leftover in glob.glob(os.path.join(self.directory, "*_temp")):
            shutil.rmtree(leftover, ignore_errors=True)  # files of a save that was killed
        for path in reversed(self.restore_manager.checkpoints):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, OSError, ValueError, IndexError, AssertionError) as e:
                log(f"Skipping checkpoint {path}: it cannot be read "
                    f"({str(e).strip().splitlines()[0]})")
                continue
            if path != self.restore_manager.latest_checkpoint:
                log(f"Resuming from the older checkpoint {path}")
            return int(self.epoch.numpy())
        if self.restore_manager.checkpoints:
            raise RunError(f"no checkpoint in {self.restore_manager.directory} can be read: "
                          "pass --overwrite to start afresh")
        return 0

    @property
    def newest_step(self) -> int:
        """The optimizer step of the newest checkpoint to restore from; 0 if none."""
        latest = self.restore_manager.latest_checkpoint
        return int(latest.rsplit("-", 1)[1]) if latest else 0

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint or self.restore_manager.latest_checkpoint

    def _save(self) -> None:
        step = int(self.model.optimizer.iterations.numpy())  # global steps, under a strategy too
        path = self.manager.save(checkpoint_number=step)
        # TensorFlow renames the files into place but does not sync them: a power cut could
        # leave the index pointing at files still in the page cache. (restore() falls back to
        # an older checkpoint if it can, but a synced one needs no fallback.)
        for name in glob.glob(path + ".*") + [os.path.join(self.directory, "checkpoint")]:
            fsync_file(name)
        fsync_dir(self.directory)

    def _diverged(self, what: str, where: str) -> TrainingDiverged:
        kept = (f"the last good checkpoint {self.latest} is kept" if self.latest
                else "no checkpoint had been saved yet")
        return TrainingDiverged(f"{what} at {where}: training diverged; lower --learning_rate "
                                f"or check the data ({kept}; nothing of the diverged run was saved)")

    def watch_interrupts(self):
        """Context manager: while inside, Ctrl-C or SIGTERM (a scheduler's or `docker
        stop`'s request to stop) sets `interrupted` instead of stopping at once; a second
        one acts as usual."""
        return _InterruptFlag(self)

    def stop_if_interrupted(self):
        """Raises Interrupted after a Ctrl-C or SIGTERM that came once the epoch's
        batches were done: that epoch's checkpoint is saved already."""
        if self.interrupted:
            self._stop(steps=0)

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch
        self.stop_if_interrupted()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))  # the epoch's running mean: NaN stays NaN
        if not math.isfinite(loss):
            raise self._diverged(f"loss became {loss}", f"epoch {self.current_epoch + 1}, "
                                                        f"step {batch + 1}")
        if self.interrupted:
            self.steps_into_epoch.assign(batch + 1)
            self._save()
            self._stop(steps=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        # The last step's update can break the weights after a finite loss.
        bad = [f"{name} became {float(value)}" for name, value in (logs or {}).items()
               if name.endswith("loss") and not math.isfinite(float(value))]
        if not all(np.isfinite(w.numpy()).all() for w in self.model.trainable_weights):
            bad.append("the weights became NaN or Inf")
        if bad:
            raise self._diverged(", ".join(bad), f"the end of epoch {epoch + 1}")
        self.epoch.assign(epoch + 1)
        self.steps_into_epoch.assign(0)
        self._save()

    def _stop(self, steps: int):
        model_dir = os.path.dirname(self.directory)
        if not self.latest and not steps:
            raise Interrupted(f"interrupted in {model_dir} before the first step; "
                                      "nothing to save", self.interrupted)
        if steps:
            where = (f"epoch {self.current_epoch + 1}, step {steps}; saved {self.latest}; "
                     f"rerun the same command to resume (epoch {self.current_epoch + 1} "
                     "restarts from its first batch, from the weights saved now)")
        else:
            where = (f"the end of epoch {int(self.epoch.numpy())}; {self.latest} holds it; "
                     "rerun the same command to resume")
        raise Interrupted(f"interrupted in {model_dir} at {where}", self.interrupted)


class _InterruptFlag:
    # What a second signal does: Ctrl-C raises KeyboardInterrupt, SIGTERM terminates.
    SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self, checkpoint: EpochCheckpoint):
        self.checkpoint = checkpoint
        self.previous = {}

    def _handler(self, signum, frame):
        self.checkpoint.interrupted = signum
        for other, second in self.SIGNALS.items():
            signal.signal(other, second)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


PAUSE_AT_STEP = "TF_AUTOENCODER_PAUSE_AT_STEP"


class PauseAtStep(keras.callbacks.Callback):
    """A hook for tests of Ctrl-C, SIGTERM and SIGKILL: with the environment variable
    TF_AUTOENCODER_PAUSE_AT_STEP=N, training stops after global step N, prints
    "paused at step N" on stderr and waits until a signal arrives, then goes on (or
    ends, as the signal says). So a test sends its signal at a known step, however
    fast or slow the machine."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    @classmethod
    def from_environment(cls) -> list:
        value = os.environ.get(PAUSE_AT_STEP)
        return [cls(int(value))] if value else []

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) != self.step:
            return
        # Python's C-level signal handler writes to the wakeup fd before it returns, so
        # once the read below returns, the Python handler runs at the next bytecode,
        # here in the main thread, before the callbacks after this one see the step.
        readable, writable = os.pipe()
        os.set_blocking(writable, False)
        previous = signal.set_wakeup_fd(writable)
        try:
            print(f"paused at step {self.step}", file=sys.stderr, flush=True)
            os.read(readable, 1)
        finally:
            signal.set_wakeup_fd(previous)
            os.close(readable)
            os.close(writable)


def trim_history(path: str, finished_epochs: int) -> None:
    """Drops rows of epochs that no checkpoint holds (written just before a crash or a
    divergence), so that a resumed run does not log them twice."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    rows = [line for line in lines[1:] if line.split(",", 1)[0].strip().isdigit()
            and int(line.split(",", 1)[0]) < finished_epochs]
    if len(rows) != len(lines) - 1:
        write_text_atomic(path, "".join(lines[:1] + rows))


def train(config: Config, splits: Splits, log=print,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Trains (or resumes) the run `config` describes on `splits`; returns the test metrics.

    `config` is validated, its data fields and seed set, and its model_dir checked
    (see commands.train). `strategy` (distribute.make_strategy; default: one device)
    places the replicas. Every worker of a multi-worker strategy runs this; only the
    chief writes model_dir, and the others restore from it, write to a scratch
    directory and remove it at the end.
    """
    strategy = strategy or tf.distribute.get_strategy()
    # Every worker shuffles with the chief's seed, so that its shard is its share.
    config.seed = chief_value(strategy, config.seed)
    if is_chief(strategy):
        return _run(config, splits, log, strategy)
    with tempfile.TemporaryDirectory(prefix="tf_autoencoder-worker-") as scratch:
        worker_config = dataclasses.replace(
            config, model_dir=scratch,
            save_images=config.save_images and os.path.join(scratch, "images"))
        return _run(worker_config, splits, lambda *_: None, strategy,
                      restore_from=os.path.join(config.model_dir, CHECKPOINT_DIR))


def _run(config: Config, splits: Splits, log, strategy: tf.distribute.Strategy,
         restore_from: str | None = None) -> dict:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    os.makedirs(config.model_dir, exist_ok=True)
    with strategy.scope():  # the model's and optimizer's variables go on every replica
        model = build_autoencoder(config)
        compile_model(model, config)
        checkpoint = EpochCheckpoint(model, os.path.join(config.model_dir, CHECKPOINT_DIR),
                                     restore_from=restore_from)
        # Restoring is collective under several workers: they must restore the same one.
        # Workers that do not see the chief's model_dir (a file system that is not shared)
        # would wait on each other for ever instead.
        check_workers_agree(strategy, checkpoint.newest_step,
                            "newest checkpoints (steps) in model_dir/checkpoints",
                            "every worker must read the chief's model_dir, on a shared file "
                            "system, or all start afresh with --overwrite")
        initial_epoch = checkpoint.restore(log)
    log(parameter_summary(model))
    if checkpoint.latest:
        steps = int(checkpoint.steps_into_epoch.numpy())
        log(f"Resuming from the end of epoch {initial_epoch} in {config.model_dir}" if not steps
            else f"Resuming in {config.model_dir} from step {steps} of epoch {initial_epoch + 1}, "
                 "which was interrupted: it restarts from its first batch")
    trim_history(os.path.join(config.model_dir, HISTORY), initial_epoch)
    config.save(os.path.join(config.model_dir, CONFIG_FILE))
    if initial_epoch >= config.epochs:
        exported = export_holding(float32_twin(model, config),
                                  os.path.join(config.model_dir, EXPORT_DIR))
        finished = exported and os.path.isfile(os.path.join(config.model_dir, TEST_METRICS))
        if chief_value(strategy, int(bool(finished))):  # the other workers follow the chief
            # The end of a run writes its export last: everything before it is there too.
            log(f"{config.model_dir} already holds {initial_epoch} epochs, exported as "
                f"{exported}: nothing to train or export (raise --epochs to train longer)")
            if not finished:  # a worker: its scratch model_dir holds nothing
                return {}
            return read_test_metrics(os.path.join(config.model_dir, TEST_METRICS))
        log(f"{config.model_dir} already holds {initial_epoch} epochs: nothing to train "
            "(raise --epochs to train longer)")

    def pipeline(split):  # validation and test
        # Resumed runs shift the seed so they do not replay the first epochs' noise.
        return make_dataset(
            split.images, batch_size=config.batch_size, training=False,
            noise_factor=config.noise_factor, data_format=config.data_format,
            seed=config.seed + initial_epoch)

    callbacks = [
        keras.callbacks.CSVLogger(os.path.join(config.model_dir, HISTORY), append=True),
        *tensorboard_callbacks(config, splits),
        *PauseAtStep.from_environment(),
        checkpoint,  # last, so an epoch is checkpointed only after everything else logged it
    ]

    if initial_epoch < config.epochs:
        # Epoch e's batches follow from the seed and e alone: the same with and without
        # a strategy, and for a resumed run the ones the uninterrupted run had.
        train_batches = make_training_epochs(
            splits.train.images, batch_size=config.batch_size,
            epochs=range(initial_epoch, config.epochs), seed=config.seed,
            noise_factor=config.noise_factor, data_format=config.data_format)
        with checkpoint.watch_interrupts():
            model.fit(train_batches, steps_per_epoch=len(splits.train) // config.batch_size,
                      validation_data=pipeline(splits.validation),
                      epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                      shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
        checkpoint.stop_if_interrupted()

    test_metrics = model.evaluate(pipeline(splits.test), return_dict=True, verbose=0)
    test_metrics = {name: float(value) for name, value in test_metrics.items()}
    test_path = os.path.join(config.model_dir, TEST_METRICS)
    write_test_metrics(test_path, test_metrics, config.noise_factor)
    log(test_metrics_line(test_metrics, config.noise_factor, test_path))
    final = float32_twin(model, config)  # the projector, model.keras and the export: float32
    write_run_end(final, config, splits, test_metrics, epoch=max(initial_epoch, config.epochs) - 1,
                  log=log)
    save_model_atomic(final, os.path.join(config.model_dir, FINAL_MODEL))
    log(f"Saved {os.path.join(config.model_dir, FINAL_MODEL)}")
    log(f"Exported {export_saved_model(final, config, os.path.join(config.model_dir, EXPORT_DIR))}")
    return test_metrics


def save_model_atomic(model: keras.Model, path: str) -> None:
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    model.save(tmp)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")
