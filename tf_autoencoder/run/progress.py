"""Each epoch's line on screen: Keras' progress line, saying how many images the
epoch trained per second, e.g.

    STEPS/STEPS - Ns - Nms/step - N images/s - bce: ... - val_rmse: ...
"""
from __future__ import annotations

import time

import keras


class EpochLine(keras.callbacks.ProgbarLogger):
    """Keras' ProgbarLogger (fit uses it instead of its own), with the epoch's training
    images per second after its ms/step: the images of the steps the optimizer took,
    over the time from the epoch's start to its validation's (the ms/step Keras shows
    includes the validation). The first epoch's rate includes building the step
    function.

    batch_size: the global batch (every replica's share together)."""

    def __init__(self, batch_size: int, clock=time.perf_counter):
        super().__init__()
        self.batch_size = batch_size
        self.clock = clock
        self.started = self.trained = None
        self.steps_at_start = 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.steps_at_start = int(self.model.optimizer.iterations.numpy())
        self.started, self.trained = self.clock(), None

    def on_test_begin(self, logs=None):
        super().on_test_begin(logs)
        if self.started is not None and self.trained is None:
            self.trained = self.clock() - self.started  # the training steps end here

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.trained if self.trained is not None else self.clock() - self.started
        steps = int(self.model.optimizer.iterations.numpy()) - self.steps_at_start
        rate = steps * self.batch_size / seconds if seconds > 0 else float("inf")
        # Keras prints '{ms}/{unit_name}'; the rate follows the unit, before the metrics.
        self.progbar.unit_name = f"step - {rate:,.0f} images/s"
        super().on_epoch_end(epoch, logs)
