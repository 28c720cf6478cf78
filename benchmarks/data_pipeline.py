#!/usr/bin/env python
"""Training from a folder of PNG files: memory against the folder's size, and speed.

1. Peak memory (the process's maximum resident set) of `train.py --epochs 1` on a
   folder of --small and of --large PNG files (Fashion-MNIST images, repeated as hard
   links): streaming means it must not grow with the number of files.
2. In one process, on the --small folder: images/s of the input pipeline alone, from the
   files (decoded anew) and cached (--cache memory: uint8 arrays), beside images/s of the
   training step fed by each; the bar is training from files at >= 90% of from arrays.

    python benchmarks/data_pipeline.py --data_dir /usr/share/datasets/fashion-mnist
"""
import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]


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


def measure_memory(folder: str, batch_size: int) -> tuple[float, float]:
    """(peak resident MiB, seconds) of `train.py --epochs 1` on `folder`, in a child
    process whose own resource usage is collected (os.wait4)."""
    with tempfile.TemporaryDirectory() as model_dir, tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "train.py"), "--data_dir", folder, "--epochs",
             "1", "--batch_size", str(batch_size), "--embedding_images", "0", "--seed", "1",
             "--model_dir", model_dir], stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if process.returncode:
            out.seek(0)
            raise SystemExit(f"train.py failed on {folder}:\n{out.read()}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss: KiB on Linux


def images_per_second(dataset, steps: int, batch_size: int, model=None) -> float:
    """Images/s over `steps` batches of `dataset` (after one), iterated alone or fitted."""
    iterator = iter(dataset)
    if model is None:
        next(iterator)
        start = time.perf_counter()
        for _ in range(steps):
            next(iterator)
    else:
        batch = next(iterator)
        model.train_on_batch(*batch)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*next(iterator))
    return steps * batch_size / (time.perf_counter() - start)


def speeds(folder: str, batch_size: int, steps: int) -> list[tuple[str, float]]:
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    from tf_autoencoder.config import Config
    from tf_autoencoder.data import pipeline, sources
    from tf_autoencoder.model.models import build_autoencoder
    from tf_autoencoder.run.training import compile_model

    splits = sources.load_data(data_dir=folder, log=lambda *_: None)
    files = splits.train.images
    start = time.perf_counter()
    arrays = files[:]
    cache_seconds = time.perf_counter() - start
    config = Config(batch_size=batch_size, image_shape=list(files.image_shape), seed=1,
                    precision="float32").validate()
    results = [("caching the training split (--cache memory), once",
                len(arrays) / cache_seconds)]
    for name, images in (("files", files), ("cached arrays", arrays)):
        batches = pipeline.make_training_epochs(images, batch_size=batch_size,
                                                epochs=range(100), seed=1)
        results.append((f"input pipeline alone, from {name}",
                        images_per_second(batches, steps, batch_size)))
    for name, images in (("files", files), ("cached arrays", arrays)):
        model = build_autoencoder(config)
        compile_model(model, config)
        batches = pipeline.make_training_epochs(images, batch_size=batch_size,
                                                epochs=range(100), seed=1)
        results.append((f"training step fed from {name}",
                        images_per_second(batches, steps, batch_size, model)))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist",
                        help="Fashion-MNIST's IDX files (the images to write as PNG)")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="batches per speed figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        print("| images in the folder | peak memory (MiB) | seconds (listing, 1 epoch, test) |")
        print("|---:|---:|---:|")
        folders = {}
        for count in (args.small, args.large):
            folders[count] = write_folder(os.path.join(work, str(count)), count, args.data_dir,
                                          distinct=min(1000, count))
            peak, seconds = measure_memory(folders[count], args.batch_size)
            print(f"| {count:,} | {peak:,.0f} | {seconds:.1f} |")
        print()
        print("| what | images/s |")
        print("|---|---:|")
        results = speeds(folders[args.small], args.batch_size, args.steps)
        for name, value in results:
            print(f"| {name} | {value:,.0f} |")
        train = dict(results)
        ratio = (train["training step fed from files"]
                 / train["training step fed from cached arrays"])
        print(f"\nTraining from files runs at {ratio:.0%} of the speed from cached arrays.")


if __name__ == "__main__":
    main()
