#!/usr/bin/env python
"""The cost of checking a cache file before it is reused, beside an epoch trained on it.

A `--cache DIR` file carries the SHA-256 of its pixels; before it is reused its header,
size and checksum are checked (data/cache.py, cache_file_damage): one sequential read
of the file. This measures that check on a cache file of Fashion-MNIST's 60,000
training images (47 MB), against one training epoch of the post's model fed from the
same file, in one process: the check --rounds times, the epoch --epochs times, medians.
The file is in the page cache (it was just written): the figure is the hashing; a file
read cold from disk adds one sequential read of it, which the first epoch would pay
for anyway.

    python benchmarks/cache_check.py
    python benchmarks/cache_check.py --quick     # 6,000 images; printed only

Writes its section of benchmarks/RESULTS.md (between its markers; not with --quick).
"""
import argparse
import datetime
import gzip
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from train_speed import cpu_model, write_section  # noqa: E402

BEGIN, END = "<!-- cache_check:begin -->", "<!-- cache_check:end -->"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


class ArrayImages:
    """uint8 (N, H, W, C) images in memory, as cache.write_cache reads a source: their
    shape and a dataset of them in order."""

    def __init__(self, images):
        self.images = images
        self.shape = images.shape

    def dataset(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.images)


def measure(images, batch_size: int, rounds: int, epochs: int, work: str) -> dict:
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    from tf_autoencoder.config import Config
    from tf_autoencoder.data import pipeline
    from tf_autoencoder.data.cache import CachedImages, cache_file_damage, write_cache
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.training import compile_model

    path = os.path.join(work, "train.npy")
    write_cache(ArrayImages(images), path)
    checks = []
    for _ in range(rounds):
        start = time.perf_counter()
        assert cache_file_damage(path, images.shape) is None
        checks.append(time.perf_counter() - start)
    cached = CachedImages(path)
    config = Config(batch_size=batch_size, image_shape=list(images.shape[1:]), seed=1,
                    precision="float32").validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    steps = len(images) // batch_size
    batches = iter(pipeline.make_training_epochs(cached, batch_size=batch_size,
                                                 epochs=range(epochs + 1), seed=1))
    for _ in range(steps):  # the first epoch builds and warms up: not counted
        model.train_on_batch(*next(batches))
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*next(batches))
        times.append(time.perf_counter() - start)
    return {"bytes": os.path.getsize(path), "check": statistics.median(checks),
            "epoch": statistics.median(times), "weights": model.count_params()}


def section(args, count: int, result: dict) -> str:
    ratio = result["check"] / result["epoch"]
    return "\n".join([
        "## Checking a cache file before reuse, beside an epoch", "",
        f"`python benchmarks/cache_check.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" on {datetime.date.today()}: {os.cpu_count()} x {cpu_model()}, shared with other "
        f"jobs; Python {platform.python_version()}. A cache file of {count:,} Fashion-MNIST "
        f"training images (28x28 grey, {result['bytes'] / 2**20:,.1f} MiB), in the page "
        f"cache; the post's model ({result['weights']:,} weights), batch {args.batch_size}, "
        "fed from the file. Medians of "
        f"{args.rounds} checks and {args.epochs} epochs (after one to warm up), one process.", "",
        "| what | seconds |", "|---|---:|",
        f"| check: header, size and SHA-256 of the pixels (`cache_file_damage`) | "
        f"{result['check']:.3f} |",
        f"| one training epoch from the file | {result['epoch']:.2f} |", "",
        f"The check costs **{ratio:.1%}** of an epoch, once per run (each split's file is "
        "checked when it is opened), at "
        f"{result['bytes'] / result['check'] / 2**20:,.0f} MiB/s."])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST, help="Fashion-MNIST's IDX files")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="checks timed")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed")
    parser.add_argument("--quick", action="store_true", help="6,000 images, 1 epoch; printed only")
    args = parser.parse_args(argv)
    import numpy as np

    with gzip.open(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    if args.quick:
        images, args.epochs = images[:6000], 1
    with tempfile.TemporaryDirectory() as work:
        result = measure(images, args.batch_size, args.rounds, args.epochs, work)
    text = section(args, len(images), result)
    print(text)
    if not args.quick:
        write_section(text, BEGIN, END)
        print("Wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
