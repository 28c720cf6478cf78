#!/usr/bin/env python
"""How much faster the decoder's stride-2 transposed convs train as sub-pixel convs.

Two copies of the default model train in one process, from the same weights, on the
same input pipeline: A computes every transposed conv with ops.conv_transpose, B its 3x3
stride-2 ones with layers.sub_pixel_conv_transpose (a 2x2 conv, then depth_to_space).
They alternate A B, B A, ... for --pairs short fits, so a shared machine's slow spells
hit both alike; a fit's time runs from the end of its second step to the end of its
last, so starting and stopping the data iterator does not count. Prints each pair's
ratio A / B (above 1: sub-pixel is faster) and their median.

train.py takes the sub-pixel path only in bfloat16 (see layers.Conv2DTranspose); with
--precision float32 this script forces it, to show why float32 keeps the plain op.

    python benchmarks/sub_pixel.py --pairs 10
    python benchmarks/sub_pixel.py --precision float32 --pairs 6
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import keras  # noqa: E402
from tf_autoencoder.data import pipeline  # noqa: E402
from tf_autoencoder.data import sources  # noqa: E402
from tf_autoencoder.model import layers as layers_lib  # noqa: E402
from tf_autoencoder.config import Config  # noqa: E402
from tf_autoencoder.model.models import build_autoencoder  # noqa: E402
from tf_autoencoder.run.training import compile_model  # noqa: E402
from train_speed import FASHION_MNIST, cpu_model, ensure_fashion_mnist  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Seconds per step from the end of step 2 to the end of the last one."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            self.start, self.steps = time.perf_counter(), 0
        elif batch > 1:
            self.end, self.steps = time.perf_counter(), self.steps + 1

    def seconds_per_step(self):
        return (self.end - self.start) / self.steps


def build(config, batches, sub_pixel: bool):
    """A compiled model whose transposed convs take the sub-pixel path iff `sub_pixel`.
    The choice is made when Keras traces the train step, so this traces it right away."""
    keras.utils.set_random_seed(0)
    model = build_autoencoder(config)
    compile_model(model, config)
    layer_class = layers_lib.Conv2DTranspose
    chosen = layer_class.SUB_PIXEL_DTYPES
    compute_dtype = "bfloat16" if config.precision == "mixed_bfloat16" else "float32"
    layer_class.SUB_PIXEL_DTYPES = (compute_dtype,) if sub_pixel else ()
    try:
        model.fit(batches, steps_per_epoch=2, verbose=0, shuffle=False)
    finally:
        layer_class.SUB_PIXEL_DTYPES = chosen
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST)
    parser.add_argument("--precision", default="mixed_bfloat16", help="mixed_bfloat16 or float32")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="steps per fit")
    parser.add_argument("--quick", action="store_true", help="MNIST sample, 2 pairs of 4 steps")
    args = parser.parse_args(argv)
    if args.quick:
        splits, args.pairs, args.steps = sources.load_mnist_sample(), 2, 4
    else:
        ensure_fashion_mnist(args.data_dir)
        splits = sources.load_idx_dir(args.data_dir)

    config = Config(image_shape=splits.image_shape, precision=args.precision, seed=0).validate()
    batches = pipeline.make_dataset(splits.train.images, batch_size=config.batch_size,
                                    training=True, noise_factor=0.5, seed=0).repeat()
    plain, sub_pixel = build(config, batches, False), build(config, batches, True)
    times = {"plain": [], "sub_pixel": []}
    for pair in range(args.pairs):
        order = [("plain", plain), ("sub_pixel", sub_pixel)]
        for name, model in order[::-1] if pair % 2 else order:
            timer = StepTimer()
            model.fit(batches, steps_per_epoch=args.steps, verbose=0, callbacks=[timer],
                      shuffle=False)
            times[name].append(timer.seconds_per_step() * 1000)
        print(f"pair {pair}: plain {times['plain'][-1]:.1f} ms/step, "
              f"sub-pixel {times['sub_pixel'][-1]:.1f} ms/step", flush=True)

    ratios = [a / b for a, b in zip(times["plain"], times["sub_pixel"])]
    print(f"\n{config.precision}, batch {config.batch_size}, {splits.source}: median step "
          f"plain {statistics.median(times['plain']):.1f} ms, sub-pixel "
          f"{statistics.median(times['sub_pixel']):.1f} ms")
    print(f"plain / sub-pixel: median of pair ratios {statistics.median(ratios):.3f} "
          f"({', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; TensorFlow "
          f"{__import__('tensorflow').__version__}, Keras {keras.__version__}; "
          f"{time.strftime('%Y-%m-%d')}")
    return ratios


if __name__ == "__main__":
    main()
