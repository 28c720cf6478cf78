"""Compile, restore, fit, evaluate, save: one training run in a model_dir.

model_dir/
  config.json       the full resolved configuration (what data was actually used, too)
  checkpoints/      ckpt-<step>: one per epoch and one at Ctrl-C (weights, optimizer, epoch,
                    the random-number generators' states)
  train/ validation/ projector/ events.out.*  TensorBoard logs (see summaries.py)
  model.keras       the final model
  history.csv       loss and metrics per epoch, training and validation
  test_metrics.json loss, RMSE, BCE, MSE on the test split, inputs with the run's noise
  threshold.json    the anomaly threshold, calibrated on the validation images (anomaly.py)
  code_gaussian.npz --anomaly_score code: the Gaussian of the training images' codes
  export/<version>/ the final model as a SavedModel for serving (export.py)
"""
from __future__ import annotations

import contextlib
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

from ..config import Config, RunFacts
from ..errors import Interrupted, RunError, TrainingDiverged
from ..pause import wait_for_signal
from .distribute import check_workers_agree, chief_value, is_chief, is_multi_worker
from ..serving.export import export_holding, export_saved_model
from ..files import (fsync_dir, fsync_file, remove_leftovers, temp_path, write_error,
                     write_text_atomic)
from ..model.metrics import make_loss, make_metrics
from ..model_dir import (CHECKPOINT_DIR, CONFIG_FILE, EXPORT_DIR, FINAL_MODEL, HISTORY, RUN_FACTS,
                        TEST_METRICS)
from ..model.linear_path import start_at_pca
from ..model.models import build_autoencoder, float32_twin
from ..data.pipeline import check_replicas, make_dataset, make_training_epochs
from ..data.sources import Splits
from .progress import EpochLine
from .anomaly import (calibrate, check_same_calibration, check_same_map, served_gaussian,
                      test_auroc)
from .summaries import (read_test_metrics, tensorboard_callbacks, test_metrics_line,
                        write_run_end, write_test_auroc, write_test_metrics)


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




def random_states(model: keras.Model) -> list:
    """The states of the model's random-number generators, in a fixed order: one per
    dropout layer and the VAE's sampling. Keras keeps them as variables beside the
    weights (in model.variables, not model.weights), and a checkpoint of the model
    leaves them out."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state, the random-number generators' states and the
    epoch counter after every epoch, and stops training cleanly on Ctrl-C and on a NaN
    or Inf loss (with `divergence_check`, the callback that goes first).

    Checkpoints are numbered by the optimizer step (`ckpt-<step>`). TensorFlow writes
    a checkpoint's files under a temporary name, renames them, and only then swaps the
    small `checkpoint` index file atomically, so a kill mid-save keeps the previous one
    as the newest; `restore` also falls back to an older checkpoint if the newest
    cannot be read.

    Ctrl-C (after `watch_interrupts`) is acted on at the next batch boundary: a
    checkpoint is saved there with the finished-epoch counter unchanged, so a rerun
    starts the interrupted epoch again from its first batch, from the weights and
    optimizer step reached when it was interrupted.  A non-finite loss or weights
    raise TrainingDiverged before anything is saved: `divergence_check`, first among the
    callbacks, checks the end of an epoch before anything logs it.

    The generators' states are saved so that a resumed run draws the dropout masks and
    the VAE's noise the uninterrupted run would have drawn, instead of those of step 0
    again: with --deterministic, a run resumed from the end of an epoch is the
    uninterrupted run, bit for bit.

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
        parts = dict(model=model, optimizer=model.optimizer, epoch=self.epoch,
                     steps_into_epoch=self.steps_into_epoch)
        self.random_states = random_states(model)
        random_state = tf.train.Checkpoint(**{f"generator_{i}": state for i, state
                                              in enumerate(self.random_states)})
        self.checkpoint = tf.train.Checkpoint(**parts, random_state=random_state)
        # Checkpoints saved before the generators' states were are read without them.
        self.checkpoint_without_random_state = tf.train.Checkpoint(**parts)
        self.divergence_check = _EpochEndCheck(self)
        self.max_to_keep = max_to_keep
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)
        self.restore_manager = self.manager if restore_from is None else (
            tf.train.CheckpointManager(self.checkpoint, restore_from, max_to_keep))
        self.interrupted = 0  # the signal that asked training to stop, once one came
        self.current_epoch = 0

    def restore(self, log=print, epochs: int | None = None) -> int:
        """Restores the newest readable checkpoint, if any; returns the number of finished
        epochs. Raises RunError if checkpoints exist but none can be read.

        epochs: what the run is asked to train. A checkpoint saved in the middle of an
        epoch after that many (a Ctrl-C, then a rerun with --epochs lowered) holds part
        of an epoch the run is not to train: the end-of-epoch one before it is restored
        instead, where there is one."""
        for leftover in glob.glob(os.path.join(self.directory, "*_temp")):
            shutil.rmtree(leftover, ignore_errors=True)  # files of a save that was killed
        candidates = self._recover_index(log)
        beyond = []  # readable checkpoints with part of an epoch after `epochs`
        for path in reversed(candidates):
            try:
                self._restore(path, log)
            except (tf.errors.OpError, OSError, ValueError, IndexError, AssertionError) as e:
                log(f"Skipping checkpoint {path}: it cannot be read "
                    f"({str(e).strip().splitlines()[0]})")
                continue
            epoch, steps = int(self.epoch.numpy()), int(self.steps_into_epoch.numpy())
            if epochs is not None and epoch >= epochs and steps:
                log(f"Passing over checkpoint {path}: it holds {steps} steps of epoch "
                    f"{epoch + 1}, beyond --epochs {epochs}")
                beyond.append(path)
                continue
            if path != self.restore_manager.latest_checkpoint:
                log(f"Resuming from the older checkpoint {path}")
            return epoch
        if beyond:  # no checkpoint ends where --epochs does: the newest, which says so
            self._restore(beyond[0], log)
            return int(self.epoch.numpy())
        if candidates:
            raise RunError(f"no checkpoint in {self.restore_manager.directory} can be read: "
                           "pass --overwrite to start afresh")
        return 0

    def _recover_index(self, log) -> list[str]:
        """The checkpoints to restore from, oldest first. They are the index's (the small
        `checkpoint` file), unless it is damaged, missing, or lists fewer than the files
        hold: then the files themselves, and the chief rewrites the index from them, so
        that a damaged index never makes a run start afresh over its own checkpoints."""
        manager = self.restore_manager
        files = sorted((path[:-len(".index")] for path in
                        glob.glob(os.path.join(manager.directory, "ckpt-*.index"))),
                       key=lambda prefix: int(prefix.rsplit("-", 1)[1]))
        listed = list(manager.checkpoints)
        if set(files) <= set(listed):
            return listed
        log(f"The checkpoint index {os.path.join(manager.directory, 'checkpoint')} is damaged "
            f"or incomplete: recovering it from the {len(files)} checkpoint files there")
        if manager is self.manager:  # ours to write
            tf.compat.v1.train.update_checkpoint_state(manager.directory, files[-1],
                                                       all_model_checkpoint_paths=files)
            self.manager = self.restore_manager = tf.train.CheckpointManager(
                self.checkpoint, manager.directory, self.max_to_keep)
        return sorted(set(files) | set(listed), key=lambda prefix: int(prefix.rsplit("-", 1)[1]))

    def _restore(self, path: str, log) -> None:
        """Restores the checkpoint `path` into the model, optimizer and counters."""
        saved = [name for name, _ in tf.train.list_variables(path)]
        if any(name.startswith("random_state/") for name in saved):
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return
        self.checkpoint_without_random_state.restore(path).assert_existing_objects_matched()
        if self.random_states:
            log(f"Checkpoint {path} holds no random-number state (an older version saved "
                "it): dropout masks and sampling start again from the seed's first draws")

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

    def check_epoch_end(self, epoch, logs) -> None:
        """Raises TrainingDiverged if an epoch's losses or the weights are not finite."""
        # The last step's update can break the weights after a finite loss.
        bad = [f"{name} became {float(value)}" for name, value in (logs or {}).items()
               if name.endswith("loss") and not math.isfinite(float(value))]
        if not all(np.isfinite(w.numpy()).all() for w in self.model.trainable_weights):
            bad.append("the weights became NaN or Inf")
        if bad:
            raise self._diverged(", ".join(bad), f"the end of epoch {epoch + 1}")

    def on_epoch_end(self, epoch, logs=None):
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


class _EpochEndCheck(keras.callbacks.Callback):
    """EpochCheckpoint's check of an epoch's end, as the first callback: a diverged
    epoch then reaches neither history.csv nor TensorBoard, whose logs a resumed run
    would otherwise have two values of at one step."""

    def __init__(self, checkpoint: EpochCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.check_epoch_end(epoch, logs)


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
        # Once a signal has arrived its Python handler runs here, in the main thread,
        # before the callbacks after this one see the step (see pause.wait_for_signal).
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            wait_for_signal(f"paused at step {self.step}")


def trim_history(path: str, finished_epochs: int, log=print) -> None:
    """Drops rows of epochs that no checkpoint holds (written just before a crash or a
    divergence), so that a resumed run does not log them twice."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines or not lines[0].startswith("epoch,"):  # not the header CSVLogger writes
        damaged = path + ".damaged"
        os.replace(path, damaged)
        log(f"{path} is damaged (no epoch header): kept as {damaged}; the rows of the "
            "epochs trained from now on go into a new one")
        return
    rows = [line for line in lines[1:] if line.split(",", 1)[0].strip().isdigit()
            and int(line.split(",", 1)[0]) < finished_epochs]
    if len(rows) != len(lines) - 1:
        write_text_atomic(path, "".join(lines[:1] + rows))


def train(settings: Config, facts: RunFacts, splits: Splits, log=print,
          strategy: tf.distribute.Strategy | None = None) -> dict:
    """Trains (or resumes) the run that `settings` (validated, as the user gave them) and
    `facts` (what the command found: image shape, data, seed, precision) describe, on
    `splits`; returns the test metrics. model_dir is checked and locked (commands.train).

    `strategy` (distribute.make_strategy; default: one device) places the replicas. Every
    worker of a multi-worker strategy runs this; only the chief writes model_dir, and the
    others restore from it, write to a scratch directory and remove it at the end.
    """
    strategy = strategy or tf.distribute.get_strategy()
    check_replicas(strategy.num_replicas_in_sync, settings.resolved(facts).batch_size,
                   {"validation": len(splits.validation), "test": len(splits.test)})
    # Every worker shuffles with the chief's seed, so that its shard is its share.
    facts = dataclasses.replace(facts, seed=chief_value(strategy, facts.seed))
    if is_chief(strategy):
        return _run(settings, facts, splits, log, strategy)
    with tempfile.TemporaryDirectory(prefix="tf_autoencoder-worker-") as scratch:
        worker_settings = dataclasses.replace(
            settings, model_dir=scratch,
            save_images=settings.save_images and os.path.join(scratch, "images"))
        return _run(worker_settings, facts, splits, lambda *_: None, strategy,
                    restore_from=os.path.join(settings.model_dir, CHECKPOINT_DIR))


def _run(settings: Config, facts: RunFacts, splits: Splits, log,
         strategy: tf.distribute.Strategy, restore_from: str | None = None) -> dict:
    """One run, in order: build the model and restore its checkpoint; a finished run
    stops there; else record the run's settings and facts, train the epochs left, score
    the test split, save and export."""
    config = settings.resolved(facts)  # what the model and the data pipeline follow
    model, checkpoint, initial_epoch = _build_and_restore(config, strategy, restore_from, log)
    if config.linear_path == "pca" and not checkpoint.latest:  # a fresh run: fitted here
        log(start_at_pca(model, splits.train.images, config.seed))
    if initial_epoch >= config.epochs:
        done = _finished_run(model, checkpoint, config, initial_epoch, strategy, log)
        if done is not None:
            return done
    else:  # a run that trains: its record first (a finished run's files stay as they are)
        trim_history(os.path.join(config.model_dir, HISTORY), initial_epoch, log)
        settings.save(os.path.join(config.model_dir, CONFIG_FILE))
        facts.save(os.path.join(config.model_dir, RUN_FACTS))
        _fit(model, checkpoint, config, splits, initial_epoch, strategy)
    return _score_save_export(model, config, splits, initial_epoch, strategy, log)


def _build_and_restore(config: Config, strategy, restore_from, log):
    """The compiled model, its EpochCheckpoint, and the epochs the restored one holds."""
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
        initial_epoch = checkpoint.restore(log, epochs=config.epochs)
    log(parameter_summary(model))
    if checkpoint.latest:
        steps = int(checkpoint.steps_into_epoch.numpy())
        log(f"Resuming from the end of epoch {initial_epoch} in {config.model_dir}" if not steps
            else f"Resuming in {config.model_dir} from step {steps} of epoch {initial_epoch + 1}, "
                 "which was interrupted: it restarts from its first batch")
    return model, checkpoint, initial_epoch


def _finished_run(model, checkpoint, config: Config, initial_epoch: int, strategy,
                  log) -> dict | None:
    """A run that holds its epochs already: its test metrics if it is exported too (it
    writes nothing then); None if its end (score, save, export) is still to do."""
    # Part of the next epoch only where no checkpoint ends at an epoch (restore's `epochs`).
    partial = int(checkpoint.steps_into_epoch.numpy())
    held = f"{initial_epoch} epochs" + (
        f" and {partial} steps of epoch {initial_epoch + 1}" if partial else "")
    exported = export_holding(float32_twin(model, config),
                              os.path.join(config.model_dir, EXPORT_DIR))
    finished = exported and os.path.isfile(os.path.join(config.model_dir, TEST_METRICS))
    if not chief_value(strategy, int(bool(finished))):  # the other workers follow the chief
        log(f"{config.model_dir} already holds {held}: nothing to train "
            "(raise --epochs to train longer)")
        return None
    if finished:
        check_same_calibration(config.model_dir, config)
        check_same_map(config.model_dir, config)
    # The end of a run writes its export last: everything before it is there too.
    log(f"{config.model_dir} already holds {held}, exported as "
        f"{exported}: nothing to train or export (raise --epochs to train longer)")
    if not finished:  # a worker: its scratch model_dir holds nothing
        return {}
    test_path = os.path.join(config.model_dir, TEST_METRICS)
    try:
        return read_test_metrics(test_path)
    except (ValueError, AttributeError, TypeError) as e:
        raise RunError(f"{test_path} is damaged ({e}): delete it and run the command "
                       "again to score the test split anew") from None


def _evaluation_batches(split, stream: int, config: Config, strategy):
    """Validation (stream 1) and test (stream 2) batches. The same noisy inputs every
    epoch and on every rerun, from the seed alone: a resumed run scores what the
    uninterrupted run scored, and epochs compare on one set of inputs. `stream` keeps the
    splits' noise apart from each other's and from the training epochs' (seeds
    seed + epoch, below 2**32 + epochs)."""
    return per_worker(strategy, lambda context: make_dataset(
        split.images, batch_size=config.batch_size, training=False,
        noise_factor=config.noise_factor, data_format=config.data_format,
        seed=config.seed + stream * 2**32, new_noise_each_pass=False,
        replicas=strategy.num_replicas_in_sync, context=context))


def per_worker(strategy, make):
    """make(context) -> a tf.data.Dataset, as `strategy` should be fed. With several
    workers, each makes its own, from its tf.distribute.InputContext, and reads only its
    replicas' shares of each global batch: from a folder, each file is decoded by the one
    worker that trains on it. (Given one dataset, the strategy would have every worker
    read every image and keep its share.) One process makes one dataset of global
    batches, which the strategy splits across its devices."""
    # A worker of several replicas (GPUs) yields a batch per replica, which tf.distribute
    # counts as steps: Keras then warns once that the validation data ran out, early by
    # its count (the metrics are right). Keras' validation_steps would avoid the warning
    # but fails the second epoch's validation (it reuses the spent iterator).
    if is_multi_worker(strategy):
        return strategy.distribute_datasets_from_function(make)
    return make(None)


def _fit(model, checkpoint, config: Config, splits: Splits, initial_epoch: int,
         strategy) -> None:
    """Trains epochs initial_epoch + 1 .. config.epochs, checkpointing each."""
    callbacks = [
        checkpoint.divergence_check,  # first, so that nothing logs a diverged epoch
        keras.callbacks.CSVLogger(os.path.join(config.model_dir, HISTORY), append=True),
        *tensorboard_callbacks(config, splits),
        *PauseAtStep.from_environment(),
        EpochLine(config.batch_size),  # the line each epoch prints, with its images/s
        checkpoint,  # last, so an epoch is checkpointed only after everything else logged it
    ]
    # Epoch e's batches follow from the seed and e alone: the same with and without
    # a strategy, and for a resumed run the ones the uninterrupted run had.
    train_batches = per_worker(strategy, lambda context: make_training_epochs(
        splits.train.images, batch_size=config.batch_size,
        epochs=range(initial_epoch, config.epochs), seed=config.seed,
        noise_factor=config.noise_factor, data_format=config.data_format, context=context))
    with checkpoint.watch_interrupts():
        model.fit(train_batches, steps_per_epoch=len(splits.train) // config.batch_size,
                  validation_data=_evaluation_batches(splits.validation, 1, config, strategy),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    checkpoint.stop_if_interrupted()


def _score_save_export(model, config: Config, splits: Splits, initial_epoch: int, strategy,
                       log) -> dict:
    """The end of a run: test metrics, the projector, model.keras and the export, in that
    order (the export last: a run that has one has everything)."""
    test_metrics = model.evaluate(_evaluation_batches(splits.test, 2, config, strategy),
                                  return_dict=True, verbose=0)
    test_metrics = {name: float(value) for name, value in test_metrics.items()}
    test_path = os.path.join(config.model_dir, TEST_METRICS)
    write_test_metrics(test_path, test_metrics, config.noise_factor)
    log(test_metrics_line(test_metrics, config.noise_factor, test_path))
    final = float32_twin(model, config)  # the projector, model.keras and the export: float32
    write_run_end(final, config, splits, test_metrics, epoch=max(initial_epoch, config.epochs) - 1,
                  log=log)
    # Before model.keras: a finished run always has its threshold, which the export carries.
    threshold = calibrate(final, config.model_dir, config, splits.validation.images,
                          splits.train.images, log)["threshold"]
    if config.normal_classes is not None:
        auroc = test_auroc(final, config, splits.test)
        if auroc is not None:
            write_test_auroc(config, auroc, epoch=max(initial_epoch, config.epochs) - 1)
            log(f"Test AUROC of the anomaly score: {auroc:.4f} (`evaluate` draws the ROC curve)")
    save_model_atomic(final, os.path.join(config.model_dir, FINAL_MODEL))
    log(f"Saved {os.path.join(config.model_dir, FINAL_MODEL)}")
    exported = export_saved_model(final, config, os.path.join(config.model_dir, EXPORT_DIR),
                                  threshold=threshold,
                                  gaussian=served_gaussian(config.model_dir, config))
    log(f"Exported {exported}")
    return test_metrics


def save_model_atomic(model: keras.Model, path: str) -> None:
    """model.save, whole or not at all; WriteError naming `path` (a full disk too)."""
    remove_leftovers(os.path.dirname(os.path.abspath(path)))
    tmp = temp_path(path)  # ends in .keras, as Keras requires
    try:
        model.save(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, (OSError, tf.errors.OpError)):
            raise write_error(path, e) from None
        raise
