#!/usr/bin/env python
"""Training from a folder of PNG files: memory against the folder's size, and speed.

1. Peak memory (the process's maximum resident set) of `train.py --epochs 1` on a
   folder of --small and of --large PNG files (Fashion-MNIST images, repeated as hard
   links), read from the files (--cache none) and from a cache file (--cache DIR):
   streaming means it must not grow with the number of files.
2. In one process, on the --small folder: images/s of the input pipeline alone and of
   the training step fed by it, from the files (decoded every epoch), from the cache file
   (--cache DIR) and from uint8 arrays in memory (what IDX files and --cache memory
   give), in --rounds alternating rounds; the bar is >= 90% of the arrays' speed.

    python benchmarks/data_pipeline.py --data_dir /usr/share/datasets/fashion-mnist
    python benchmarks/data_pipeline.py --quick     # a smoke run: small folders, printed only

Writes its section of benchmarks/RESULTS.md (between its markers; not with --quick).
"""
import argparse
import datetime
import gzip
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from train_speed import cpu_model, write_section  # noqa: E402

BEGIN, END = "<!-- data_pipeline:begin -->", "<!-- data_pipeline:end -->"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def write_folder(root: str, count: int, idx_dir: str, distinct: int = 1000) -> str:
    """`count` PNG files in 10 class folders: `distinct` real images, then hard links."""
    import numpy as np
    from PIL import Image

    with gzip.open(os.path.join(idx_dir, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)[:distinct * 784].reshape(-1, 28, 28)
    with gzip.open(os.path.join(idx_dir, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:distinct]
    originals = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = os.path.join(root, str(label), f"{i:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
        originals.append((path, label))
    for i in range(distinct, count):
        source, label = originals[i % distinct]
        os.link(source, os.path.join(root, str(label), f"{i:07d}.png"))
    return root


def measure_memory(folder: str, batch_size: int, *extra: str) -> tuple[float, float]:
    """(peak resident MiB, seconds) of `train.py --epochs 1` on `folder`, in a child
    process whose own resource usage is collected (os.wait4)."""
    with tempfile.TemporaryDirectory() as model_dir, tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", folder, "--epochs",
             "1", "--batch_size", str(batch_size), "--embedding_images", "0", "--seed", "1",
             "--model_dir", model_dir, *extra], stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if process.returncode:
            out.seek(0)
            raise SystemExit(f"train.py failed on {folder}:\n{out.read()}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss: KiB on Linux


def images_per_second(iterator, steps: int, batch_size: int, model=None,
                      clock=time.perf_counter) -> float:
    """Images/s over the next `steps` batches of `iterator` (after one), read alone or
    each fitted by one training step; with clock=time.process_time, images per second of
    this process's CPU time (all its threads)."""
    step = (lambda batch: None) if model is None else (lambda batch: model.train_on_batch(*batch))
    step(next(iterator))
    start = clock()
    for _ in range(steps):
        step(next(iterator))
    return steps * batch_size / (clock() - start)


def speeds(folder: str, cache: str, batch_size: int, steps: int, rounds: int
           ) -> tuple[list[tuple[str, float]], dict[str, list[float]]]:
    """([(what, images/s)], {source: [training images/s per round]})."""
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    from tf_autoencoder.config import Config
    from tf_autoencoder.data import pipeline, sources
    from tf_autoencoder.data.cache import cache_splits
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.training import compile_model

    splits = sources.load_data(data_dir=folder, log=lambda *_: None)
    files = splits.train.images
    total = sum(len(getattr(splits, name)) for name in ("train", "validation", "test"))
    once, inputs = [], {"files": files}
    for name, where, words in (("arrays", "memory", "into memory (--cache memory)"),
                               ("cache file", cache, "into a file (--cache DIR)")):
        start = time.perf_counter()
        inputs[name] = cache_splits(splits, where, log=lambda *_: None).train.images
        once.append((f"decoding every split once, {words}", total / (time.perf_counter() - start)))
    config = Config(batch_size=batch_size, image_shape=list(files.image_shape), seed=1,
                    precision="float32").validate()
    model = build_autoencoder(config)
    compile_model(model, config)
    needed = (steps + 1) * (rounds + 1) * batch_size  # images: the figures' batches, and more
    epochs = range(-(-needed // len(files)) + 1)
    streams = {name: iter(pipeline.make_training_epochs(images, batch_size=batch_size,
                                                        epochs=epochs, seed=1))
               for name, images in inputs.items()}
    alone = {name: images_per_second(stream, steps, batch_size)
             for name, stream in streams.items()}
    training = {name: [] for name in inputs}
    for _ in range(rounds):  # alternated, so that the machine's load falls on all alike
        for name, stream in streams.items():
            training[name].append(images_per_second(stream, steps, batch_size, model))
    results = once + [(f"input pipeline alone, from the {name}", alone[name]) for name in inputs]
    results += [(f"training step fed from the {name} (median of {rounds} rounds)",
                 statistics.median(training[name])) for name in inputs]
    return results, training


def section(args, memory_rows, results, training) -> str:
    ratio = lambda name: statistics.median(  # noqa: E731
        a / b for a, b in zip(training[name], training["arrays"]))
    lines = [
        "## Training from a folder of PNG files: memory and speed", "",
        f"`python benchmarks/data_pipeline.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
        + f" on {datetime.date.today()}: {os.cpu_count()} x {cpu_model()}, shared with other "
        f"jobs; Python {platform.python_version()}. The folders hold 28x28 grey PNG files in "
        f"10 class folders: {min(1000, args.small):,} Fashion-MNIST images, then hard links "
        "to them (the split rule hashes paths, so every link is a file of its own). Batch "
        f"{args.batch_size}, the default model.", "",
        "**Peak memory**, the maximum resident set of `train.py --epochs 1` on the folder, "
        "one process each (listing, caching, training, validation and test included):", "",
        "| images in the folder | read from | peak memory (MiB) | seconds |",
        "|---:|---|---:|---:|"]
    lines += [f"| {count:,} | {source} | {peak:,.0f} | {seconds:.1f} |"
              for count, source, peak, seconds in memory_rows]
    lines += ["", f"**Speed**, in one process on the {args.small:,}-file folder ({args.steps} "
              "batches per figure, after one; the training steps in alternating rounds):", "",
              "| what | images/s |", "|---|---:|"]
    lines += [f"| {name} | {value:,.0f} |" for name, value in results]
    lines += ["", f"Training fed from the files ran at **{ratio('files'):.0%}** of its speed "
              f"from arrays in memory, from the cache file at **{ratio('cache file'):.0%}** "
              "(medians of the rounds' ratios)."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST,
                        help="Fashion-MNIST's IDX files (the images to write as PNG)")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="batches per speed figure")
    parser.add_argument("--rounds", type=int, default=5, help="alternating training rounds")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 400 files cached in one training process, speeds on 200 files, "
                             "2 steps, 2 rounds; printed only")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.steps, args.rounds, args.batch_size = 200, 400, 2, 2, 32
    with tempfile.TemporaryDirectory() as work:
        folders, memory_rows = {}, []
        for count in (args.small, args.large):
            folders[count] = write_folder(os.path.join(work, str(count)), count, args.data_dir,
                                          distinct=min(1000, count))
            for source, extra in (("files", ("--cache", "none")),
                                  ("cache file", ("--cache", os.path.join(work, f"cache{count}")))):
                if args.quick and (source == "files" or count == args.small):
                    continue  # a smoke run: one process, on the cache
                peak, seconds = measure_memory(folders[count], args.batch_size, *extra)
                memory_rows.append((count, source, peak, seconds))
                print(f"{count:,} images from {source}: peak {peak:,.0f} MiB, {seconds:.1f} s",
                      flush=True)
        results, training = speeds(folders[args.small], os.path.join(work, "speed_cache"),
                                   args.batch_size, args.steps, args.rounds)
    text = section(args, memory_rows, results, training)
    print(text)
    if not args.quick:
        write_section(text, BEGIN, END)
        print("Wrote benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
