"""Training speed of tf-autoencoder against the PyTorch reference, in one invocation.

    python benchmarks/train_speed.py                # full Fashion-MNIST, 4 epochs per setting
    python benchmarks/train_speed.py --quick        # a smoke run: tiny data, one step

Measures, on the same data with the same thread count:
  - training images/s (median of the epochs after the first) and test BCE after the same
    epochs, for the PyTorch reference and for our model in each setting (layout,
    precision, XLA), each as a ratio to the reference;
  - images/s of the tf.data input pipeline alone, with noise on;
  - peak resident memory of a full `train.py` run.
Writes its section of benchmarks/RESULTS.md (between its markers; other sections stay).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]


import numpy as np  # noqa: E402

from tf_autoencoder import Config, data  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"
# (name, data_format, precision, jit_compile)
SETTINGS = [
    ("NHWC float32", "channels_last", "float32", False),
    ("NCHW float32", "channels_first", "float32", False),
    ("NHWC mixed_bfloat16", "channels_last", "mixed_bfloat16", False),
    ("NHWC float32 XLA", "channels_last", "float32", True),
]


def ensure_fashion_mnist(path: str) -> None:
    if os.path.isdir(path):
        return
    print(f"{path} is missing: installing Debian's dataset-fashion-mnist", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train_tf(splits, *, data_format, precision, jit_compile, epochs, threads, max_steps=None,
             seed=0):
    """Our model and pipeline, as training.py builds them, with one setting changed."""
    import keras
    import tensorflow as tf

    from tf_autoencoder import build_autoencoder
    from tf_autoencoder.training import compile_model

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    config = Config(image_shape=splits.image_shape, data_format=data_format, precision=precision,
                    seed=seed).validate()
    keras.utils.set_random_seed(seed)
    model = build_autoencoder(config)
    compile_model(model, config)
    model.jit_compile = jit_compile
    train = data.make_dataset(splits.train.images, batch_size=256, training=True,
                              data_format=data_format, seed=seed)
    test = data.make_dataset(splits.test.images, batch_size=1000, training=False,
                             data_format=data_format)
    steps = len(splits.train) // 256 if max_steps is None else max_steps
    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - times.pop()))
    model.fit(train.take(steps), epochs=epochs, callbacks=[timer], verbose=0)
    test_bce = model.evaluate(test, return_dict=True, verbose=0)["bce"]
    return {"images_per_second": [steps * 256 / t for t in times], "test_bce": float(test_bce)}


def pipeline_speed(splits, noise_factor=0.5, passes=3) -> float:
    dataset = data.make_dataset(splits.train.images, batch_size=256, training=True,
                                noise_factor=noise_factor, seed=0)
    for _ in dataset:  # the first pass fills the cache
        pass
    start, n = time.perf_counter(), 0
    for _ in range(passes):
        for inputs, _ in dataset:
            n += int(inputs.shape[0])
    return n / (time.perf_counter() - start)


# Runs train.py in this child and reports the child's own peak resident memory (VmHWM)
# at exit. getrusage's RUSAGE_CHILDREN would not do: it counts the forked child's copy of
# this process's pages before exec, so it reports the benchmark's size, not train.py's.
_MEASURED_CHILD = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open("/proc/self/status") as f:
        print(next(line for line in f if line.startswith("VmHWM")), file=sys.stderr)
"""


def peak_memory_of_training_run(data_dir, epochs=1) -> float:
    """Peak resident memory (GiB) of `train.py` on `data_dir` for `epochs`, in a subprocess."""
    import tempfile

    with tempfile.TemporaryDirectory() as model_dir:
        result = subprocess.run(
            [sys.executable, "-c", _MEASURED_CHILD, os.path.join(REPO, "train.py"), "--data_dir",
             data_dir, "--epochs", str(epochs), "--model_dir", model_dir],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = [line for line in result.stderr.splitlines() if line.startswith("VmHWM")][-1]
    return int(line.split()[1]) / 2**20  # kB -> GiB


def median_after_warmup(speeds):
    return statistics.median(speeds[1:] if len(speeds) > 1 else speeds)


def write_section(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replaces the text between `begin` and `end` in RESULTS.md (appends it if absent)."""
    from tf_autoencoder.config import write_text_atomic

    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(RESULTS, new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--settings", default="all",
                        help="comma-separated setting names to run (default: all)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train the reference and the default setting with this many seeds "
                             "and compare their mean test BCE (speeds come from seed 0)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 epochs of one step on a small sample; writes nothing")
    args = parser.parse_args(argv)

    import torch
    import torch_reference

    if args.quick:
        splits = data.load_mnist_sample()
        epochs, max_steps = 2, 1
    else:
        ensure_fashion_mnist(args.data_dir)
        splits = data.load_idx_dir(args.data_dir)
        # All 60,000 training images: the benchmark has no use for a validation split.
        splits.train = data.Split(np.concatenate([splits.validation.images, splits.train.images]),
                                  np.concatenate([splits.validation.labels, splits.train.labels]))
        epochs, max_steps = args.epochs, None
    settings = SETTINGS if args.settings == "all" else [
        s for s in SETTINGS if s[0] in args.settings.split(",")]

    default = Config().validate()  # what train.py uses on this machine
    rows = []
    reference = torch_reference.train(splits.train.images, splits.test.images, epochs=epochs,
                                      threads=args.threads, max_steps=max_steps)
    ref_speed = median_after_warmup(reference["images_per_second"])
    rows.append((f"PyTorch {torch.__version__} reference (NCHW float32)", ref_speed,
                 reference["test_bce"]))
    print(f"{rows[-1][0]}: {ref_speed:,.0f} images/s, test BCE {reference['test_bce']:.4f}",
          flush=True)
    for name, data_format, precision, jit in settings:
        result = train_tf(splits, data_format=data_format, precision=precision, jit_compile=jit,
                          epochs=epochs, threads=args.threads, max_steps=max_steps)
        is_default = (data_format, precision, jit) == (default.data_format, default.precision, False)
        rows.append((f"tf-autoencoder {name}{' (the default here)' if is_default else ''}",
                     median_after_warmup(result["images_per_second"]),
                     result["test_bce"]))
        print(f"{rows[-1][0]}: {rows[-1][1]:,.0f} images/s ({rows[-1][1] / ref_speed:.2f}x), "
              f"test BCE {result['test_bce']:.4f}", flush=True)
    seed_bce = {"reference": [reference["test_bce"]],
           "default": [bce for name, _, bce in rows if name.endswith("(the default here)")]}
    for seed in range(1, args.seeds):
        seed_bce["reference"].append(torch_reference.train(
            splits.train.images, splits.test.images, epochs=epochs, threads=args.threads,
            max_steps=max_steps, seed=seed)["test_bce"])
        seed_bce["default"].append(train_tf(
            splits, data_format=default.data_format, precision=default.precision,
            jit_compile=False, epochs=epochs, threads=args.threads, max_steps=max_steps,
            seed=seed)["test_bce"])
        print(f"seed {seed}: test BCE reference {seed_bce['reference'][-1]:.4f}, "
              f"default {seed_bce['default'][-1]:.4f}", flush=True)
    pipeline = pipeline_speed(splits)
    print(f"input pipeline with noise: {pipeline:,.0f} images/s", flush=True)
    if args.quick:
        return rows
    memory = peak_memory_of_training_run(args.data_dir)
    print(f"peak memory of a train.py run: {memory:.2f} GiB", flush=True)

    best_tf = max(row[1] for row in rows[1:])
    lines = [
        "## Training speed against the PyTorch reference",
        "",
        f"`python benchmarks/train_speed.py --epochs {epochs}"
        f"{f' --seeds {args.seeds}' if args.seeds > 1 else ''}` on {datetime.date.today()}, "
        f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} threads for both frameworks; "
        f"{len(splits.train):,} training images ({splits.source}), batch 256, the 7,873-weight "
        "model, sigmoid cross-entropy, Adam. images/s is the median of the epochs after the "
        f"first; test BCE is after {epochs} epochs.",
        "",
        "| setting | images/s | vs PyTorch | test BCE |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {speed:,.0f} | {speed / ref_speed:.2f}x | {bce:.4f} |"
              for name, speed, bce in rows]
    if args.seeds > 1 and len(seed_bce["default"]) == args.seeds:
        reference_mean, default_mean = (statistics.mean(seed_bce[k]) for k in ("reference", "default"))
        lines += [
            "",
            f"Test BCE after {epochs} epochs, seeds 0 to {args.seeds - 1}: the reference "
            f"{reference_mean:.4f} on average (" + ", ".join(f"{v:.4f}" for v in seed_bce["reference"])
            + f"), the default setting {default_mean:.4f} ("
            + ", ".join(f"{v:.4f}" for v in seed_bce["default"])
            + f"): {100 * (default_mean / reference_mean - 1):+.1f}%.",
        ]
    lines += [
        "",
        f"Input pipeline alone (shuffle, batch, noise 0.5): {pipeline:,.0f} images/s, "
        f"{pipeline / best_tf:.0f}x the fastest training setting.",
        "",
        f"Peak resident memory of `train.py --data_dir {args.data_dir} --epochs 1`: "
        f"{memory:.2f} GiB.",
    ]
    write_section("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
