#!/usr/bin/env python
"""How much longer an epoch takes with the TensorBoard summaries than without.

One model trains epoch after epoch in one process, alternating an epoch without any
TensorBoard callback (A) and one with all of them (B: Keras' TensorBoard callback and
ours, as train.py adds them with default settings), A B A B ..., after one warm-up epoch
of each. An epoch's time runs from its start to the end of the last callback's
on_epoch_end, validation included. Prints the medians and their ratio, and, measured
directly in the B epochs, the seconds spent in the summary callbacks' on_epoch_end
(where they do their work), which shared machines' noise does not swamp.

    python benchmarks/summaries_cost.py --data_dir /usr/share/datasets/fashion-mnist --pairs 5
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import keras  # noqa: E402
from tf_autoencoder.data import pipeline  # noqa: E402
from tf_autoencoder.data import sources  # noqa: E402
from tf_autoencoder.config import Config  # noqa: E402
from tf_autoencoder.model.models import build_autoencoder  # noqa: E402
from tf_autoencoder.run.summaries import tensorboard_callbacks, write_run_end  # noqa: E402
from tf_autoencoder.run.training import compile_model  # noqa: E402
from train_speed import cpu_model  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's seconds, and the seconds its on_epoch_end hooks took after
    `on_epoch_end_start` ran; put it last so the others' on_epoch_end count."""

    def __init__(self):
        super().__init__()
        self.seconds, self.end_hook_seconds = [], []
        self.end_hooks_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.end_hooks_start = time.perf_counter(), None

    def on_epoch_end_start(self):
        self.end_hooks_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.seconds.append(now - self.start)
        if self.end_hooks_start is not None:
            self.end_hook_seconds.append(now - self.end_hooks_start)


class MarkEpochEnd(keras.callbacks.Callback):
    """Put first: tells `timer` when the epoch's on_epoch_end hooks begin."""

    def __init__(self, timer: EpochTimer):
        super().__init__()
        self.timer = timer

    def on_epoch_end(self, epoch, logs=None):
        self.timer.on_epoch_end_start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist_sample")
    parser.add_argument("--data_dir", default=None, help="a folder of IDX files (overrides --dataset)")
    parser.add_argument("--pairs", type=int, default=5, help="measured (A, B) epoch pairs")
    args = parser.parse_args()

    splits = sources.load_data(args.dataset, args.data_dir)
    with tempfile.TemporaryDirectory() as model_dir:
        config = Config(dataset=args.dataset, data_dir=args.data_dir, seed=0, model_dir=model_dir,
                        image_shape=splits.image_shape).validate()
        keras.utils.set_random_seed(config.seed)
        model = build_autoencoder(config)
        compile_model(model, config)
        train = pipeline.make_dataset(splits.train.images, batch_size=config.batch_size,
                                      training=True, seed=config.seed)
        validation = pipeline.make_dataset(splits.validation.images,
                                           batch_size=config.batch_size, training=False)
        timers = {"without": EpochTimer(), "with": EpochTimer()}
        callbacks = {"without": [timers["without"]],
                     "with": [MarkEpochEnd(timers["with"]), *tensorboard_callbacks(config, splits),
                              timers["with"]]}
        epoch = 0
        print(f"{splits.source}: {len(splits.train):,} training images, "
              f"{len(splits.train) // config.batch_size} steps per epoch", flush=True)
        for round_ in range(args.pairs + 1):  # round 0 warms up (tracing, first writes)
            for variant in ("without", "with"):
                model.fit(train, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                          callbacks=callbacks[variant], shuffle=False, verbose=0)
                epoch += 1
                print(f"round {round_} {variant:>7}: {timers[variant].seconds[-1]:.2f} s", flush=True)
        without = timers["without"].seconds[1:]
        with_ = timers["with"].seconds[1:]
        start = time.perf_counter()
        write_run_end(model, config, splits, {"loss": 0.0}, epoch=epoch, log=lambda _: None)
        end_seconds = time.perf_counter() - start

    ratio = statistics.median(with_) / statistics.median(without)
    pair_ratios = [b / a for a, b in zip(without, with_)]
    print(f"\nepoch without summaries: median {statistics.median(without):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in without)})")
    print(f"epoch with summaries:    median {statistics.median(with_):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in with_)})")
    print(f"ratio of medians: {ratio:.3f}; median of pair ratios: "
          f"{statistics.median(pair_ratios):.3f} (min {min(pair_ratios):.3f}, "
          f"max {max(pair_ratios):.3f})")
    summaries = timers["with"].end_hook_seconds[1:]
    print(f"summaries' on_epoch_end per epoch: median {statistics.median(summaries):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in summaries)}), "
          f"{statistics.median(summaries) / statistics.median(without):.1%} of the median "
          "epoch without")
    print(f"once at the end of training (test metrics, projector of "
          f"{min(config.embedding_images, len(splits.test)):,} codes): {end_seconds:.2f} s")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; "
          f"TensorFlow {__import__('tensorflow').__version__}, Keras {keras.__version__}; "
          f"{time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
