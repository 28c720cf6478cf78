#!/usr/bin/env python
"""What `--deterministic` (TensorFlow op determinism) costs: seconds per training epoch
with and without it, on the MNIST sample.

Op determinism is process-wide and cannot be switched off again, so every measurement
runs in its own process. The two settings alternate (A B A B ...), so that a shared,
noisy machine slows both alike; the summary is the median of the per-pair ratios.

    python benchmarks/determinism.py --pairs 5 --epochs 3 --batch_size 256
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(deterministic: bool, epochs: int, batch_size: int, data_format: str) -> float:
    """Runs in a worker process: seconds per epoch, after one warm-up epoch."""
    sys.path.insert(0, REPO)
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)  # before TensorFlow loads
    import keras
    import tensorflow as tf

    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.data.pipeline import make_dataset
    from tf_autoencoder.data.sources import load_mnist_sample
    from tf_autoencoder.run.training import compile_model

    keras.utils.set_random_seed(0)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    config = Config(dataset="mnist_sample", image_shape=[28, 28, 1], batch_size=batch_size,
                    data_format=data_format).validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    train = make_dataset(load_mnist_sample().train.images, batch_size=batch_size, training=True,
                         data_format=config.data_format, seed=0)
    model.fit(train, epochs=1, verbose=0)  # warm-up: tracing, caches
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0)
    return (time.perf_counter() - start) / epochs


def run_worker(deterministic, args) -> float:
    command = [sys.executable, __file__, "--worker", "--epochs", str(args.epochs),
               "--batch_size", str(args.batch_size), "--data_format", args.data_format]
    if deterministic:
        command.append("--deterministic")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])["seconds_per_epoch"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--data_format", default="channels_last")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        seconds = measure(args.deterministic, args.epochs, args.batch_size, args.data_format)
        print(json.dumps({"seconds_per_epoch": seconds}))
        return

    ratios = []
    print("pair  default s/epoch  deterministic s/epoch  ratio")
    for pair in range(args.pairs):
        # Alternate which setting goes first, so neither always gets the warmer machine.
        order = [False, True] if pair % 2 == 0 else [True, False]
        seconds = {mode: run_worker(mode, args) for mode in order}
        ratios.append(seconds[True] / seconds[False])
        print(f"{pair + 1:>4}  {seconds[False]:>15.3f}  {seconds[True]:>21.3f}  {ratios[-1]:5.3f}",
              flush=True)
    print(f"median ratio deterministic / default: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
