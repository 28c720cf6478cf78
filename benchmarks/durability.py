#!/usr/bin/env python
"""What syncing to disk costs: the epoch checkpoint and an atomic small-file write, each
with fsync (as training does them) and without, alternated in one process, and, for
scale, one training epoch of the default model measured in the same run.

    python benchmarks/durability.py --pairs 30 --data_dir /usr/share/datasets/fashion-mnist

Writes its section of benchmarks/RESULTS.md (--no_write: print only).
"""
import argparse
import contextlib
import datetime
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

from tf_autoencoder.data import pipeline  # noqa: E402
from tf_autoencoder.data import sources  # noqa: E402
from tf_autoencoder import files  # noqa: E402
from tf_autoencoder.run import training  # noqa: E402
from tf_autoencoder.config import Config  # noqa: E402
from tf_autoencoder.model.models import build_autoencoder  # noqa: E402
from tf_autoencoder.model.precision import resolve_precision  # noqa: E402
from train_speed import cpu_model, write_section  # noqa: E402

BEGIN, END = "<!-- durability:begin -->", "<!-- durability:end -->"


@contextlib.contextmanager
def unsynced():
    """fsync off: what the writes cost before they were synced."""
    skip = lambda *args: None  # noqa: E731
    with mock.patch.object(training, "fsync_file", skip), \
            mock.patch.object(training, "fsync_dir", skip), \
            mock.patch.object(files, "fsync_dir", skip), \
            mock.patch.object(files.os, "fsync", skip):
        yield


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist",
                        help="IDX folder for the training epoch; mnist_sample if missing")
    parser.add_argument("--no_write", action="store_true")
    args = parser.parse_args(argv)

    splits = (sources.load_idx_dir(args.data_dir) if os.path.isdir(args.data_dir)
              else sources.load_mnist_sample())
    config = Config(image_shape=splits.image_shape, seed=0).validate()
    config.precision = resolve_precision(config.precision)
    model = build_autoencoder(config)
    training.compile_model(model, config)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = training.EpochCheckpoint(model, os.path.join(tmp, "checkpoints"))
        checkpoint.set_model(model)
        small = os.path.join(tmp, "config.json")
        text = config.to_json()
        saves = {"synced": [], "unsynced": []}
        writes = {"synced": [], "unsynced": []}
        for pair in range(args.pairs + 1):  # the first pair warms up
            for side in ("unsynced", "synced"):
                with unsynced() if side == "unsynced" else contextlib.nullcontext():
                    model.optimizer.iterations.assign(pair * 2 + (side == "synced"))
                    save = timed(checkpoint._save)
                    write = timed(lambda: files.write_text_atomic(small, text))
                if pair:
                    saves[side].append(save)
                    writes[side].append(write)
        batches = pipeline.make_training_epochs(
            splits.train.images, batch_size=config.batch_size, epochs=range(2), seed=0)
        steps = len(splits.train) // config.batch_size
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)  # warm-up
        start = time.perf_counter()
        model.fit(batches, steps_per_epoch=steps, epochs=2, initial_epoch=1, verbose=0,
                  shuffle=False)
        epoch = time.perf_counter() - start

    median = {name: {side: statistics.median(v) * 1000 for side, v in d.items()}
              for name, d in (("save", saves), ("write", writes))}
    extra_per_epoch = median["save"]["synced"] - median["save"]["unsynced"]
    lines = [
        "## Durability: the cost of fsync",
        "",
        f"`python benchmarks/durability.py --pairs {args.pairs}` on {datetime.date.today()}, "
        f"{cpu_model()}, {os.cpu_count()} cores, {config.precision}; each write alternately "
        "with and without fsync, medians of the pairs after one warm-up pair; file system of "
        "the temporary folder.",
        "",
        "| write | without fsync | with fsync | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {median[name]['unsynced']:.2f} ms | {median[name]['synced']:.2f} ms | "
          f"{median[name]['synced'] / median[name]['unsynced']:.2f}x |"
          for name, label in (("save", "epoch checkpoint (weights, optimizer, index)"),
                              ("write", "atomic small file (config.json)"))),
        "",
        f"One training epoch of the default model on {len(splits.train):,} images "
        f"({splits.source}) took {epoch:.1f} s in the same run: the synced checkpoint adds "
        f"{extra_per_epoch:.1f} ms to it ({extra_per_epoch / 10 / epoch:.3f}%).",
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(section, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
