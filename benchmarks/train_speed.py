"""Training speed of tf-autoencoder against the PyTorch reference, in one invocation.

    python benchmarks/train_speed.py                # full Fashion-MNIST, 4 epochs per setting
    python benchmarks/train_speed.py --rounds 3     # every run three times, interleaved
    python benchmarks/train_speed.py --settings none --head_to_head 12   # the head-to-head only
    python benchmarks/train_speed.py --settings none --head_to_head 8 --reference dataloader
    python benchmarks/train_speed.py --quick        # a smoke run: tiny data, one step
    python benchmarks/train_speed.py --path photos --images 30 --head_to_head 3
    python benchmarks/train_speed.py --path png --images 17000 --head_to_head 4
    python benchmarks/train_speed.py --path tfds --head_to_head 4

Measures, on the same data with the same thread count:
  - head to head: the default setting and the PyTorch reference trained in turn, epoch by
    epoch, each pair's images/s ratio (the figure for the 2.5x target: see `head_to_head`);
    the reference batches the IDX arrays held as one float tensor (--reference arrays,
    the fastest PyTorch code we know for them), or reads them as a PyTorch user's
    tutorial does, through a Dataset that makes each image a PIL image as torchvision's
    FashionMNIST does and a DataLoader with workers (--reference dataloader);
  - training images/s (median of the epochs after the first) and test BCE after the same
    epochs, for the PyTorch reference and for our model in each setting (layout,
    precision, XLA, CPU replicas), each as a ratio to the reference;
  - images/s of the tf.data input pipeline alone, with noise on;
  - peak resident memory of a full `train.py` run.
With --path png or photos, the head-to-head only, on a folder of image files written for
the run (Fashion-MNIST as PNG; 64x64 RGB patches of real photographs): ours as `train
--data_dir DIR` reads and trains it, the reference through a PyTorch Dataset and
DataLoader over the same files with a model of the same architecture; then where each
side's time goes (folder_breakdown, torch_reference.loader_and_step_speeds). With
--path tfds, the same on Fashion-MNIST stored for the run as a local TFDS dataset
(store_tfds): ours as `train --dataset NAME` reads and trains it with TFDS_DATA_DIR
naming the folder, the reference through `tfds.data_source`, as TFDS's guide for
PyTorch has it, in a Dataset and DataLoader.
Each setting of ours trains in a fresh process: TensorFlow fixes its thread pools and
logical devices at start-up. With --rounds R every run is repeated R times, in turn, so
that a slow spell of a shared machine hits all settings alike; images/s is then the
median over the rounds.
Writes its section of benchmarks/RESULTS.md (between its markers; other sections stay).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import numpy as np  # noqa: E402
from tf_autoencoder import Config  # noqa: E402
from tf_autoencoder.data import pipeline  # noqa: E402
from tf_autoencoder.data import sources  # noqa: E402
from tf_autoencoder.model.precision import resolve_precision  # noqa: E402

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
TFDS_NAME = "fashion_mnist_idx"  # --path tfds: the dataset stored from the IDX files
FORMATS = ("tfrecord", "array_record")  # --path tfds: ours' file format, the reference's
RESULTS = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"
SUBSET_BEGIN, SUBSET_END = "<!-- train_speed_subset:begin -->", "<!-- train_speed_subset:end -->"
HEAD_BEGIN, HEAD_END = "<!-- train_speed_head_to_head:begin -->", "<!-- train_speed_head_to_head:end -->"
LOADER_BEGIN, LOADER_END = ("<!-- train_speed_idx_dataloader:begin -->",
                            "<!-- train_speed_idx_dataloader:end -->")
EPOCH_DONE = "epoch done, images/s:"  # a child's report line in the head-to-head
PHOTO_SIZE = 64  # the photographs' patches, a side
BREAKDOWN_STEPS, BREAKDOWN_ROUNDS = 10, 3  # of each figure of where the time goes
TARGET = 2.5  # issue 6: training at least 2.5x the reference's images/s
# (name, data_format, precision, jit_compile, CPU replicas: 1 is one device, 0 one per thread)
SETTINGS = [
    ("NHWC float32", "channels_last", "float32", False, 1),
    ("NCHW float32", "channels_first", "float32", False, 1),
    ("NHWC mixed_bfloat16", "channels_last", "mixed_bfloat16", False, 1),
    ("NHWC float32 XLA", "channels_last", "float32", True, 1),
    ("NHWC float32 on CPU replicas", "channels_last", "float32", False, 0),
    ("NHWC mixed_bfloat16 on CPU replicas", "channels_last", "mixed_bfloat16", False, 0),
]


def ensure_fashion_mnist(path: str) -> None:
    if os.path.isdir(path):
        return
    print(f"{path} is missing: installing Debian's dataset-fashion-mnist", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True)


def load_splits(data_dir: str | None):
    """The MNIST sample for a smoke run (data_dir None), else the IDX folder with all 60,000
    training images: the benchmark has no use for a validation split."""
    if data_dir is None:
        return sources.load_mnist_sample()
    ensure_fashion_mnist(data_dir)
    splits = sources.load_idx_dir(data_dir)
    splits.train = sources.Split(np.concatenate([splits.validation.images, splits.train.images]),
                              np.concatenate([splits.validation.labels, splits.train.labels]))
    return splits


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train_tf(data_dir, *, data_format, precision, jit_compile, replicas, epochs, threads,
             max_steps=None, seed=0, on_cue=False, path="idx"):
    """Our model and pipeline, as training.py builds them, with one setting changed.
    Call it in a fresh process (see `train_tf_in_child`). With `on_cue`, each epoch waits
    for a line on stdin before its clock starts and prints its images/s after EPOCH_DONE
    when it ends (see `head_to_head`). path "png" or "photos": data_dir is a folder of
    image files, read and trained as `train --data_dir DIR` does; "tfds": TFDS's data
    folder, which holds TFDS_NAME, trained as `train --dataset TFDS_NAME` does with
    TFDS_DATA_DIR naming that folder (train_source_tf)."""
    if path != "idx":
        source = {"data_dir": data_dir}
        if path == "tfds":
            # TFDS reads TFDS_DATA_DIR once, when imported: in this fresh process, not yet.
            if "tensorflow_datasets" in sys.modules:
                raise RuntimeError("TFDS was imported before TFDS_DATA_DIR was set")
            os.environ["TFDS_DATA_DIR"] = data_dir
            source = {"dataset": TFDS_NAME}
        return train_source_tf(**source, data_format=data_format, precision=precision,
                               epochs=epochs, threads=threads, max_steps=max_steps, seed=seed,
                               on_cue=on_cue)
    import keras
    import tensorflow as tf

    from tf_autoencoder import build_autoencoder
    from tf_autoencoder.run.distribute import make_strategy
    from tf_autoencoder.run.training import compile_model

    splits = load_splits(data_dir)
    config = Config(image_shape=splits.image_shape, data_format=data_format, precision=precision,
                    seed=seed, distribute="none" if replicas == 1 else "mirrored",
                    cpu_replicas=None if replicas == 1 else replicas).validate()
    if replicas == 1:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    strategy = make_strategy(config)  # with replicas: one thread per op each, of `threads` cores
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build_autoencoder(config)
        compile_model(model, config)
    model.jit_compile = jit_compile
    # One dataset over all epochs, fitted with steps_per_epoch, as training.py does: a
    # dataset that fit iterates anew each epoch (train.take(steps)) makes a new tf.data
    # iterator each epoch, and one ended while its autotuning thread waits left the CPU
    # idle for seconds at the start of an epoch (RESULTS.md, the head-to-head's reading).
    train = pipeline.make_training_epochs(splits.train.images, batch_size=256,
                                          epochs=range(epochs), seed=seed,
                                          data_format=data_format)
    test = pipeline.make_dataset(splits.test.images, batch_size=1000, training=False,
                             data_format=data_format)
    steps = len(splits.train) // 256 if max_steps is None else max_steps
    timer, speeds = epoch_timer(steps * 256, on_cue)
    model.fit(train, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    test_bce = model.evaluate(test, return_dict=True, verbose=0)["bce"]
    return {"images_per_second": speeds, "test_bce": float(test_bce)}


def epoch_timer(images_per_epoch: int, on_cue: bool):
    """(a Keras callback that times each epoch, the list it appends each epoch's images/s
    to). With `on_cue`, each epoch waits for a line on stdin before its clock starts and
    prints its images/s after EPOCH_DONE when it ends, and the end of training waits for
    one more line: what follows it (the test loss) must not run beside the reference's
    last epoch."""
    import keras

    speeds, started = [], []

    def epoch_begin(epoch, logs):
        if on_cue:
            sys.stdin.readline()
        started.append(time.perf_counter())

    def epoch_end(epoch, logs):
        speeds.append(images_per_epoch / (time.perf_counter() - started.pop()))
        if on_cue:
            print(EPOCH_DONE, speeds[-1], flush=True)

    def train_end(logs):
        if on_cue:
            sys.stdin.readline()

    return keras.callbacks.LambdaCallback(on_epoch_begin=epoch_begin, on_epoch_end=epoch_end,
                                          on_train_end=train_end), speeds


def folder_settings(image_shape, num_train: int) -> dict:
    """The settings `train --data_dir DIR` chooses for a folder of `num_train` training
    images of `image_shape` with no flag given (image_defaults.choose)."""
    from tf_autoencoder import image_defaults

    return image_defaults.choose(list(image_shape), num_train, {})[0]


def train_source_tf(*, dataset=None, data_dir=None, data_format, precision, epochs, threads,
                    max_steps, seed, on_cue):
    """train_tf on a folder of image files or a TFDS dataset, as `train --data_dir DIR` or
    `train --dataset NAME` reads and trains it: the folder or TFDS source, the cache it
    chooses by default (decoded once into memory when the images fit), the settings
    chosen for the images where train chooses any (a folder's: model, batch, loss, the
    linear path started at PCA), make_training_epochs; without the noise, validation and
    checkpoints, which the reference does not have either. After the epochs,
    `folder_breakdown` of where the time goes."""
    import keras
    import tensorflow as tf

    from tf_autoencoder import build_autoencoder
    from tf_autoencoder.commands import chosen_settings
    from tf_autoencoder.config import RunFacts
    from tf_autoencoder.data.cache import cache_splits, choose_cache
    from tf_autoencoder.model.linear_path import start_at_pca
    from tf_autoencoder.run.training import compile_model

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    files = sources.load_data(dataset, data_dir, log=lambda *_: None)
    cache, why = choose_cache(files, None)
    start = time.perf_counter()
    splits = cache_splits(files, cache, log=lambda *_: None)
    decode_seconds = time.perf_counter() - start
    chosen = chosen_settings(None, files, {})[0]
    asked = Config(dataset=dataset, data_dir=data_dir, seed=seed, data_format=data_format,
                   precision=precision, noise_factor=0.0).validate()
    config = asked.resolved(RunFacts(image_shape=list(files.image_shape), dataset=files.name,
                                     data_source=files.source, seed=seed, precision=precision,
                                     chosen=chosen or None))
    keras.utils.set_random_seed(seed)
    model = build_autoencoder(config)
    compile_model(model, config)
    if config.linear_path == "pca":
        start_at_pca(model, splits.train.images, seed)
    batch = config.batch_size
    steps = len(splits.train) // batch if max_steps is None else max_steps
    train = pipeline.make_training_epochs(splits.train.images, batch_size=batch,
                                          epochs=range(epochs), seed=seed,
                                          data_format=config.data_format)
    timer, speeds = epoch_timer(steps * batch, on_cue)
    model.fit(train, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    test = pipeline.make_dataset(splits.test.images, batch_size=batch, training=False,
                                 data_format=config.data_format)
    test_loss = model.evaluate(test, return_dict=True, verbose=0)[config.loss]
    quick = max_steps is not None
    return {"images_per_second": speeds, "test_loss": float(test_loss), "cache": why,
            "source": files.source, "chosen": chosen, "num_train": len(files.train),
            "batch_size": batch, "weights": model.count_params(),
            "decoded_once": len(files.train) + len(files.validation) + len(files.test),
            "decode_seconds": decode_seconds,
            "breakdown": folder_breakdown(model, files.train.images, splits.train.images,
                                          config, steps=2 if quick else BREAKDOWN_STEPS,
                                          rounds=2 if quick else BREAKDOWN_ROUNDS, seed=seed)}


def folder_breakdown(model, files, pixels, config, *, steps, rounds, seed) -> dict:
    """Where our time goes on a folder, as images/s over `steps` batches (after one): the
    input pipeline alone, from memory and streamed from the files (--cache none); the
    training step alone on batches already in memory (also per second of the process's
    CPU time), and fed by each pipeline (the
    steps in `rounds` alternating rounds, medians); and the profile of the steps on
    batches in memory, by op type (ms per step, summed over TensorFlow's threads)."""
    import collections
    import itertools
    import tempfile

    import tensorflow as tf
    from data_pipeline import images_per_second
    from profile_step import op_table

    batch = config.batch_size
    needed = (steps + 1) * (2 * rounds + 2) * batch
    epochs = range(-(-needed // len(files)) + 1)
    streams = {name: iter(pipeline.make_training_epochs(
        images, batch_size=batch, epochs=epochs, seed=seed, data_format=config.data_format))
        for name, images in (("memory", pixels), ("files", files))}
    in_memory = [tuple(tf.constant(t) for t in next(streams["memory"])) for _ in range(4)]
    result = {f"pipeline alone, {name}": images_per_second(stream, steps, batch)
              for name, stream in streams.items()}
    alone = itertools.cycle(in_memory)
    feeds = {"step alone": (alone, time.perf_counter),
             "step alone, CPU": (alone, time.process_time),
             "step fed from memory": (streams["memory"], time.perf_counter),
             "step fed from files": (streams["files"], time.perf_counter)}
    runs = {name: [] for name in feeds}
    for _ in range(rounds):  # alternated, so that a slow spell falls on all alike
        for name, (feed, clock) in feeds.items():
            runs[name].append(images_per_second(feed, steps, batch, model, clock=clock))
    result.update({name: statistics.median(values) for name, values in runs.items()})
    with tempfile.TemporaryDirectory() as logdir:
        in_memory_data = tf.data.Dataset.from_tensors(in_memory[0]).repeat(steps)
        tf.profiler.experimental.start(logdir)
        model.fit(in_memory_data, verbose=0)
        tf.profiler.experimental.stop()
        by_type = collections.Counter()
        for row in op_table(logdir):
            by_type[row["type"]] += row["total_self_time"] / steps / 1000
    result["profile"] = by_type.most_common(10)
    result["profile_total"] = sum(by_type.values())
    return result


def head_to_head(splits, data_dir, default: Config, *, epochs, threads, max_steps=None,
                 seed=0, path="idx", train_reference=None) -> dict:
    """The default setting and the PyTorch reference, trained in turn epoch by epoch: ours in
    a child process that waits for its cue, the reference in this one. The two epochs of a
    pair run seconds apart, so a slow spell of a shared machine seldom falls on one side of
    a pair only; a sequential run compares epochs minutes apart. `default`: train.py's
    validated Config on this machine, whose layout and precision ours trains in. path
    "png", "photos" or "tfds": data_dir is what train_tf reads (a folder of image files,
    TFDS's data folder), and train_reference(before_epoch) trains the reference on the
    same images.
    Returns {"ours": train_tf's result, "reference": torch_reference.train's}."""
    import tempfile

    import torch_reference

    kwargs = dict(data_dir=data_dir, data_format=default.data_format,
                  precision=default.precision, jit_compile=False, replicas=1, epochs=epochs,
                  threads=threads, max_steps=max_steps, seed=seed, on_cue=True, path=path)
    if train_reference is None:
        def train_reference(before_epoch):
            return torch_reference.train(
                splits.train.images, splits.test.images, epochs=epochs, threads=threads,
                max_steps=max_steps, seed=seed, before_epoch=before_epoch)
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would block
        child = subprocess.Popen(child_command(kwargs), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=log, text=True)

        def next_report() -> str:  # an epoch's EPOCH_DONE line or the final JSON
            for line in child.stdout:
                if line.startswith((EPOCH_DONE, "{")):
                    return line
            child.wait()
            log.seek(0)
            raise RuntimeError(f"training {kwargs} failed:\n{log.read()[-3000:]}")

        ours, idle = [], {"ours": [], "reference": []}
        beside = []  # the cores our waiting child used during each of the reference's epochs
        reference_began = None  # (the machine's CPU times, our child's, the clock) then

        def reference_ended():
            machine, child_cpu, clock = reference_began
            idle["reference"].append(idle_share(machine, cpu_times()))
            beside.append(None if child_cpu is None else
                          (process_cpu_seconds(child.pid) - child_cpu)
                          / (time.perf_counter() - clock))

        def our_epoch(reference):  # reference: its images/s per epoch so far
            nonlocal reference_began
            if reference:
                reference_ended()
                print(f"head to head, epoch {len(reference)}: ours {ours[-1]:,.0f} images/s, "
                      f"reference {reference[-1]:,.0f} ({ours[-1] / reference[-1]:.2f}x)",
                      flush=True)
            start = cpu_times()
            child.stdin.write("\n")
            child.stdin.flush()
            ours.append(float(next_report()[len(EPOCH_DONE):]))
            reference_began = (cpu_times(), process_cpu_seconds(child.pid), time.perf_counter())
            idle["ours"].append(idle_share(start, reference_began[0]))

        try:
            reference = train_reference(our_epoch)
            reference_ended()
            child.stdin.write("\n")  # our test loss, now that the reference has finished
            child.stdin.flush()
            result = json.loads(next_report())
        except BaseException:
            child.kill()
            raise
        finally:
            child.wait()
    reference["ours_beside"] = beside
    result["idle"], reference["idle"] = idle["ours"], idle["reference"]
    return {"ours": result, "reference": reference}


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat: user, nice, system, idle, ...), or None
    where there are none."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """The CPU time (user + system, all threads) that process `pid` has used, or None
    where /proc has no such figure."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def idle_share(before, after) -> float | None:
    """The share of the machine's CPU time that was idle between two `cpu_times()`."""
    if not before or not after:
        return None
    spent = [b - a for a, b in zip(before, after)]
    return spent[3] / max(sum(spent), 1)


def child_command(kwargs: dict, job: str = "train_tf") -> list[str]:
    """The command that runs `job(**kwargs)` (train_tf or store_tfds) in a new Python
    process."""
    return [sys.executable, __file__, "--child", json.dumps({"job": job, **kwargs})]


def json_from_child(command: list[str], what: str) -> dict:
    """Runs `command`, a Python process that prints its result as JSON on its last line;
    that result. RuntimeError with the end of its stderr, naming `what`, if it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_child(job: str, **kwargs) -> dict:
    """`job(**kwargs)` (train_tf or store_tfds) in a new Python process; its result."""
    return json_from_child(child_command(kwargs, job), f"{job} {kwargs}")


def train_tf_in_child(**kwargs) -> dict:
    """`train_tf(**kwargs)` in a new Python process; its result, as train_tf returns it."""
    return in_child("train_tf", **kwargs)


def pipeline_speed(splits, noise_factor=0.5, passes=3) -> float:
    dataset = pipeline.make_dataset(splits.train.images, batch_size=256, training=True,
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
# An atexit callback, since train.py ends with os._exit (cli.exit_with), which runs the
# callbacks but no `finally` after it.
_MEASURED_CHILD = """
import atexit, runpy, sys

def report_peak():
    with open("/proc/self/status") as f:
        print(next(line for line in f if line.startswith("VmHWM")), file=sys.stderr)

atexit.register(report_peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
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


def head_to_head_report(pairs: dict, default: Config, args, command: list[str], splits) -> str:
    """head_to_head's result as a RESULTS.md section; written there unless --quick."""
    ours, reference = (pairs[k]["images_per_second"] for k in ("ours", "reference"))
    ratios = [a / b for a, b in zip(ours, reference)][1:]  # the first pair traces and warms up
    median = statistics.median(ratios)
    bce = {k: pairs[k]["test_bce"] for k in pairs}
    loader = args.reference == "dataloader"
    lines = [
        "## Training speed head to head: the default against the PyTorch reference"
        + (", reading the IDX arrays through a DataLoader" if loader else ""),
        "",
        f"`{shlex.join(['python', 'benchmarks/train_speed.py', *command])}` on "
        f"{datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores, {args.threads} "
        f"threads for both frameworks; {len(splits.train):,} training images "
        f"({splits.source}), batch 256. Our default here ({default.data_format}, "
        f"{default.precision}, one device) and the reference train in turn, an epoch each: "
        "ours in a child process that waits for its cue, the reference in the benchmark's "
        "own, so the two epochs of a pair run seconds apart. The first pair (tracing, "
        "warm-up) is left out. CPU idle is the share of the machine's CPU time that was "
        "idle during the epoch (/proc/stat): a run that keeps every core busy shows about 0%. "
        + (f"The reference reads the arrays as a PyTorch tutorial does: a `Dataset` whose "
           "examples are made PIL images, then float tensors, as torchvision's FashionMNIST "
           f"gives them to ToTensor, and a `DataLoader` with {args.workers} worker processes "
           "(persistent), shuffled." if loader else
           "The reference holds the arrays as one float tensor and takes each batch by index "
           "(no per-image work: the fastest PyTorch code we know for them)."),
        "",
    ]
    lines += pairs_table(pairs)
    lines += [
        "",
        f"Median ratio **{median:.2f}x** (range {min(ratios):.2f}x to {max(ratios):.2f}x; "
        f"{sum(r >= TARGET for r in ratios)} of {len(ratios)} pairs at or above {TARGET}x). "
        f"Test BCE after {len(ours)} epochs: ours {bce['ours']:.4f}, the reference "
        f"{bce['reference']:.4f} ({100 * (bce['ours'] / bce['reference'] - 1):+.1f}%).",
    ]
    text = "\n".join(lines)
    if not args.quick:
        write_section(text, *((LOADER_BEGIN, LOADER_END) if loader else (HEAD_BEGIN, HEAD_END)))
    return text


def make_folder(path: str, root: str, quick: bool, images: int | None, idx_dir: str) -> str:
    """Writes the data of `path` into `root` and describes it. photos: 64x64 RGB patches
    of the photographs that scikit-image and scikit-learn ship (photos.py's folder:
    train|validation|test/<photograph>/*.png); png: Fashion-MNIST's first `images`
    training images (from the IDX files in `idx_dir`) as 28x28 grey PNG files in 10 class
    folders (the split rule hashes the paths); tfds: store_tfds."""
    if path == "tfds":
        # In a process of its own: storing runs TensorFlow, and the reference's DataLoader
        # workers, forked from this process, crashed (SIGSEGV) where it had run here.
        counts = in_child("store_tfds", root=root, idx_dir=idx_dir,
                          train_limit=300 if quick else images,
                          test_limit=100 if quick else None)
        return (f"Fashion-MNIST stored from its IDX files as a local TFDS dataset "
                f"(`store_as_tfds_dataset`: image 28x28x1 and label; {counts['train']:,} "
                f"training and {counts['test']:,} test examples, stored as PNG), once as "
                "TFRecord files, which ours reads, and once as ArrayRecord files, which the "
                "reference reads (TFDS 4.9 reads each format one way only: TFRecord through "
                "tf.data, ArrayRecord by random access), the same examples in the same order")
    if path == "photos":
        from photos import MAX_TRAIN_PER_PHOTO, write_patch_folder

        counts = write_patch_folder(root, PHOTO_SIZE, names=("rocket",) if quick else None,
                                    train_limit=100 if quick else images or MAX_TRAIN_PER_PHOTO,
                                    held_out_limit=8 if quick else 60)
        return (f"{PHOTO_SIZE}x{PHOTO_SIZE} RGB PNG patches of the colour photographs that "
                "scikit-image and scikit-learn ship (benchmarks/photos.py's folder: "
                f"{counts['train']:,} training, {counts['validation']:,} validation, "
                f"{counts['test']:,} test patches, overlapping by half within a split)")
    from data_pipeline import write_folder

    count = 300 if quick else images or 20_000
    write_folder(root, count, idx_dir, distinct=count)
    return (f"{count:,} of Fashion-MNIST's training images as 28x28 grey PNG files in 10 class "
            "folders (split by the folder source's hash rule)")


def store_tfds(root: str, idx_dir: str, train_limit: int | None, test_limit: int | None
               ) -> dict:
    """Stores Fashion-MNIST from the IDX files in `idx_dir` as the local TFDS dataset
    TFDS_NAME (features image 28x28x1 and label; TFDS's splits train and test are the IDX
    files', cut to their first `train_limit` and `test_limit` images where given);
    returns each split's count. Stored twice, the same examples in the same order (TFDS orders a
    split by a hash of each example's key), in TFDS's data folders root/tfrecord and
    root/array_record, because TFDS 4.9 reads each format one way only: `train
    --dataset` reads through `builder.as_dataset` (tf.data), which refuses ArrayRecord
    files, and `tfds.data_source` needs random access, which TFRecord files lack. (TFDS's
    `convert_format`, which adds a format to a stored dataset, needs Apache Beam.)"""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    splits = load_splits(idx_dir)
    chosen = {"train": (splits.train, train_limit), "test": (splits.test, test_limit)}
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10)})
    for file_format in FORMATS:
        tfds.dataset_builders.store_as_tfds_dataset(
            name=TFDS_NAME, version="1.0.0", features=features, data_dir=os.path.join(
                root, file_format), file_format=file_format,
            split_datasets={name: enumerate({"image": image, "label": int(label)}
                                            for image, label in zip(split.images[:limit],
                                                                    split.labels[:limit]))
                            for name, (split, limit) in chosen.items()})
    return {name: len(split.images[:limit]) for name, (split, limit) in chosen.items()}


def reference_datasets(path: str, folder: str, shape):
    """(what ours trains on: the folder, or TFDS's data folder of the TFRecord files; the
    reference's training and test datasets, of the same images). tfds: TFDS's data
    sources, which decode each example as it is read, over the ArrayRecord files; the
    training split without the first examples, which our TFDS source holds out to
    validate (sources.validation_count)."""
    import torch_reference

    if path == "tfds":
        import tensorflow_datasets as tfds

        def source(split):
            return tfds.data_source(TFDS_NAME, split=split,
                                    data_dir=os.path.join(folder, "array_record"))

        held_out = sources.validation_count(len(source("train")))
        return (os.path.join(folder, "tfrecord"),
                *(torch_reference.Images(source(split), torch_reference.tfds_image)
                  for split in (f"train[{held_out}:]", "test")))
    from tf_autoencoder.data.folder import list_folder

    listed = {name: [item.path for item in items]
              for name, items in list_folder(folder)[0].items()}
    return (folder, *(torch_reference.image_files(listed[split], shape)
                      for split in ("train", "test")))


def folder_head_to_head(args, command: list[str]) -> str:
    """--path png, photos or tfds: the head-to-head on a folder of image files or a TFDS
    dataset, the reference reading the same images through a Dataset and a DataLoader,
    then where each side's time goes; writes its section of RESULTS.md unless --quick."""
    import tempfile

    import torch_reference

    default = Config().validate()  # what train uses on this machine
    default.precision = resolve_precision(default.precision)
    epochs, max_steps = (2, 1) if args.quick else (args.head_to_head, None)
    with tempfile.TemporaryDirectory() as folder:
        described = make_folder(args.path, folder, args.quick, args.images, args.data_dir)
        shape = tuple(shape_of(args.path))
        ours_dir, train_set, test_set = reference_datasets(args.path, folder, shape)
        # train chooses settings for a folder's images only (commands.chosen_settings).
        chosen = folder_settings(shape, len(train_set)) if args.path != "tfds" else {}
        trained = Config(**chosen)  # the settings both train with: chosen, else defaults
        reference_settings = dict(
            model="photo" if "num_filters" in chosen else "post", loss=trained.loss,
            batch_size=trained.batch_size, workers=args.workers, threads=args.threads)

        def train_reference(before_epoch):
            return torch_reference.train_examples(
                train_set, test_set, shape, epochs=epochs, max_steps=max_steps,
                lr_decay_steps=trained.lr_decay_steps, lr_decay_rate=trained.lr_decay_rate,
                before_epoch=before_epoch, **reference_settings)

        pairs = head_to_head(None, ours_dir, default, epochs=epochs, threads=args.threads,
                             max_steps=max_steps, path=args.path, train_reference=train_reference)
        ours = pairs["ours"]
        if (ours["chosen"], ours["batch_size"], ours["num_train"]) != (
                json.loads(json.dumps(chosen)), trained.batch_size, len(train_set)):
            raise RuntimeError(f"ours trained {ours['num_train']} images at batch "
                               f"{ours['batch_size']} with {ours['chosen']} chosen, the "
                               f"reference {len(train_set)} at {trained.batch_size} with {chosen}")
        reference_parts = torch_reference.loader_and_step_speeds(
            train_set, shape, steps=2 if args.quick else BREAKDOWN_STEPS,
            rounds=2 if args.quick else BREAKDOWN_ROUNDS, **reference_settings)
    text = folder_report(pairs, reference_parts, args, command, described, chosen, trained,
                         default, len(train_set))
    if not args.quick:
        write_section(text, f"<!-- train_speed_{args.path}:begin -->",
                      f"<!-- train_speed_{args.path}:end -->")
    return text


def folder_report(pairs, reference_parts, args, command, described, chosen, trained,
                  default, num_train) -> str:
    """folder_head_to_head's result as a RESULTS.md section. chosen: the settings train
    chose for the images; trained: the Config of those and the defaults."""
    from tf_autoencoder import image_defaults

    ours, reference = (pairs[k]["images_per_second"] for k in ("ours", "reference"))
    ratios = [a / b for a, b in zip(ours, reference)][1:]  # the first pair traces and warms up
    parts, loss = pairs["ours"]["breakdown"], trained.loss
    tfds = args.path == "tfds"
    title = {"photos": "64x64 photographs", "png": "a folder of PNG files",
             "tfds": "a TFDS dataset"}[args.path]
    stored = "the TFDS files" if tfds else "the files"
    if tfds:
        settings = (f"No settings chosen for the images (train chooses them for a folder's "
                    f"only): batch {trained.batch_size}, the rate x{trained.lr_decay_rate:g} "
                    f"every {trained.lr_decay_steps:,} steps, {num_train:,} training images")
        source = (f"the TFDS source ({pairs['ours']['source']}, `builder.as_dataset` over the "
                  "TFRecord files)")
        dataset = (f"`tfds.data_source('{TFDS_NAME}', split='train[N:]')` over the ArrayRecord "
                   "files (random access; TFDS decodes each example's PNG as it is read), the "
                   "training examples ours trains on, each made a float tensor,")
    else:
        settings = image_defaults.describe(chosen, [], shape_of(args.path),
                                           num_train).split(";")[0]
        source = "the folder source"
        dataset = ("the same training files (PIL decode, resize if needed, to a float "
                   "tensor)")
    lines = [
        f"## Training speed head to head on {title}: `train "
        f"{'--dataset NAME' if tfds else '--data_dir DIR'}` against a PyTorch DataLoader",
        "",
        f"`{shlex.join(['python', 'benchmarks/train_speed.py', *command])}` on "
        f"{datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores shared with other "
        f"jobs, {args.threads} threads for both frameworks. The "
        f"{'dataset' if tfds else 'folder'}: {described}. {settings}. Ours: "
        f"{default.data_format}, {default.precision}, {source} and "
        f"its default cache ({pairs['ours']['cache']}), make_training_epochs, "
        f"{pairs['ours']['weights']:,} weights, the linear path started at PCA where chosen. "
        f"The reference: a `Dataset` over {dataset} and a `DataLoader` with {args.workers} "
        f"worker processes (persistent), shuffled, batch {trained.batch_size}, the same "
        "architecture in "
        f"PyTorch ({pairs['reference']['weights']:,} weights; torch_reference.py says how it "
        "differs), the same loss, Adam and schedule. Neither adds noise, validates or "
        "checkpoints. The two train in turn, an epoch each (ours in a child process that "
        "waits for its cue); the first pair (tracing, warm-up) is left out.",
        "",
    ]
    lines += pairs_table(pairs)
    lines += [
        "",
        f"Median ratio **{statistics.median(ratios):.2f}x** (range {min(ratios):.2f}x to "
        f"{max(ratios):.2f}x). Test {loss.upper()} after {len(ours)} epochs: ours "
        f"{pairs['ours']['test_loss']:.4f}, the reference {pairs['reference']['test_loss']:.4f}.",
        "",
        f"**Where the time goes**, images/s over {2 if args.quick else BREAKDOWN_STEPS} "
        f"batches after one (the steps: medians of {2 if args.quick else BREAKDOWN_ROUNDS} "
        "alternating rounds; train_on_batch for ours, so a step here carries Python's "
        "per-call cost, which fit does not):",
        "",
        "| what | ours | reference |",
        "|---|---:|---:|",
        f"| decoding every split once into memory, before the first epoch (ours' default "
        f"here) | {pairs['ours']['decoded_once'] / pairs['ours']['decode_seconds']:,.0f} | - |",
        f"| input pipeline alone: ours from memory (the default); the reference's DataLoader "
        f"{'reading and decoding the examples' if tfds else 'decoding the files'} | "
        f"{parts['pipeline alone, memory']:,.0f} | {reference_parts['loader alone']:,.0f} |",
        f"| input pipeline alone, streamed from {stored} (--cache none) | "
        f"{parts['pipeline alone, files']:,.0f} | - |",
        f"| training step alone, on batches already in memory | {parts['step alone']:,.0f} | "
        f"{reference_parts['step alone']:,.0f} |",
        f"| training step alone, per second of the process's CPU time (all its threads; "
        f"less exposed to waits for a shared CPU, not immune) | {parts['step alone, CPU']:,.0f} | "
        f"{reference_parts['step alone, CPU']:,.0f} |",
        f"| training step fed by the pipeline from memory | {parts['step fed from memory']:,.0f} "
        "| - |",
        f"| training step fed by the pipeline from {stored} | "
        f"{parts['step fed from files']:,.0f} | - |",
        f"| end to end: the head-to-head's epochs after the first (median) | "
        f"{median_after_warmup(ours):,.0f} | {median_after_warmup(reference):,.0f} |",
        "",
        f"Our step by op type (TensorFlow's profiler on batches in memory; ms per step summed "
        f"over threads, {parts['profile_total']:.1f} ms in all): "
        + ", ".join(f"{op} {ms:.1f}" for op, ms in parts["profile"]) + ".",
    ]
    return "\n".join(lines)


def shape_of(path: str) -> list[int]:
    return [PHOTO_SIZE, PHOTO_SIZE, 3] if path == "photos" else [28, 28, 1]


def pairs_table(pairs: dict) -> list[str]:
    """head_to_head's pairs after the first as Markdown table rows."""
    ours, reference = (pairs[k]["images_per_second"] for k in ("ours", "reference"))
    percent = lambda share: "n/a" if share is None else f"{100 * share:.0f}%"  # noqa: E731
    cores = lambda used: "n/a" if used is None else f"{used:.2f}"  # noqa: E731
    lines = ["| epoch | ours, images/s | reference, images/s | ratio | CPU idle: ours | reference "
             "| cores our waiting process used in the reference's epoch |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    return lines + [f"| {i + 2} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x | {percent(idle_a)} | "
                    f"{percent(idle_b)} | {cores(used)} |"
                    for i, (a, b, idle_a, idle_b, used) in enumerate(zip(
                        ours[1:], reference[1:], pairs["ours"]["idle"][1:],
                        pairs["reference"]["idle"][1:], pairs["reference"]["ours_beside"][1:]))]


def write_section(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replaces the text between `begin` and `end` in RESULTS.md (appends it if absent)."""
    from tf_autoencoder.files import write_text_atomic

    old = open(RESULTS).read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(RESULTS, new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST,
                        help="the folder of Fashion-MNIST's IDX files (the data of the idx, "
                             "png and tfds paths)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--settings", default="all",
                        help="comma-separated setting names to run (default: all; none: only "
                             "the head-to-head)")
    parser.add_argument("--head_to_head", type=int, default=8, metavar="EPOCHS",
                        help="epochs of the default setting and the reference trained in turn, "
                             "epoch by epoch (0: skip)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run everything this many times, in turn; images/s is the median")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train the reference and the default setting with this many seeds "
                             "and compare their mean test BCE (speeds come from seed 0)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 epochs of one step on a small sample; writes nothing")
    parser.add_argument("--path", choices=("idx", "png", "photos", "tfds"), default="idx",
                        help="the head-to-head's data: IDX arrays in memory (default), a "
                             "folder of Fashion-MNIST PNG files, or of 64x64 RGB photograph "
                             "patches, or Fashion-MNIST stored as a local TFDS dataset (ours "
                             "as `train --dataset`, the reference through tfds.data_source); "
                             "png, photos and tfds run the head-to-head only, with where the "
                             "time goes")
    parser.add_argument("--images", type=int, default=None,
                        help="png: files in the folder (default 20,000); photos: training "
                             "patches per photograph at most (default photos.py's); tfds: "
                             "training examples stored (default all 60,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="the reference's DataLoader worker processes (png, photos, tfds, "
                             "--reference dataloader)")
    parser.add_argument("--reference", choices=("arrays", "dataloader"), default="arrays",
                        help="idx head-to-head: the reference batches the arrays held as one "
                             "float tensor (default), or reads them through a Dataset (each "
                             "image a PIL image, as torchvision's FashionMNIST) and a "
                             "DataLoader with --workers workers")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # in_child's job and JSON arguments
    args = parser.parse_args(argv)
    if args.head_to_head < 0 or args.head_to_head == 1:
        parser.error("--head_to_head takes 0 (skip) or at least 2 epochs: the first pair is "
                     "a warm-up, left out of the ratios")
    if args.reference != "arrays" and args.path != "idx":
        parser.error(f"--reference {args.reference} is the idx path's: --path {args.path} "
                     "always reads its files through a DataLoader")
    if args.settings == "none" and not args.head_to_head:
        parser.error("--settings none with --head_to_head 0 measures nothing")
    if args.child:
        kwargs = json.loads(args.child)
        job = {"train_tf": train_tf, "store_tfds": store_tfds}[kwargs.pop("job")]
        print(json.dumps(job(**kwargs)))
        return None

    if args.path != "idx":
        if not args.head_to_head:
            parser.error(f"--path {args.path} measures the head-to-head: give --head_to_head 2 "
                         "or more")
        print(folder_head_to_head(args, sys.argv[1:] if argv is None else argv), flush=True)
        return None

    import torch
    import torch_reference

    data_dir = None if args.quick else args.data_dir
    splits = load_splits(data_dir)
    epochs, max_steps = (2, 1) if args.quick else (args.epochs, None)
    settings = [(name.replace("CPU replicas", f"{replicas or args.threads} CPU replicas"),
                 data_format, precision, jit, replicas or args.threads)
                for name, data_format, precision, jit, replicas in SETTINGS
                if args.settings == "all" or name in args.settings.split(",")]
    default = Config().validate()  # what train.py uses on this machine
    default.precision = resolve_precision(default.precision)
    default_setting = (default.data_format, default.precision, False, 1)

    if args.head_to_head:
        pair_epochs = 2 if args.quick else args.head_to_head
        def dataloader_reference(before_epoch):
            train_set, test_set = (
                torch_reference.Images(np.asarray(split.images[:]), torch_reference.idx_image)
                for split in (splits.train, splits.test))
            result = torch_reference.train_examples(
                train_set, test_set, tuple(splits.image_shape), model="post",
                epochs=pair_epochs, batch_size=256, workers=args.workers,
                threads=args.threads, max_steps=max_steps, before_epoch=before_epoch)
            return {**result, "test_bce": result["test_loss"]}

        # None: head_to_head's own reference, the arrays as one tensor.
        pairs = head_to_head(splits, data_dir, default, epochs=pair_epochs,
                             threads=args.threads, max_steps=max_steps,
                             train_reference=dataloader_reference
                             if args.reference == "dataloader" else None)
        command = sys.argv[1:] if argv is None else argv
        print(head_to_head_report(pairs, default, args, command, splits), flush=True)
    if args.settings == "none":
        return None

    def train_reference(seed=0):
        return torch_reference.train(splits.train.images, splits.test.images, epochs=epochs,
                                     threads=args.threads, max_steps=max_steps, seed=seed)

    def train_ours(setting, seed=0):
        _, data_format, precision, jit, replicas = setting
        return train_tf_in_child(data_dir=data_dir, data_format=data_format, precision=precision,
                                 jit_compile=jit, replicas=replicas, epochs=epochs,
                                 threads=args.threads, max_steps=max_steps, seed=seed)

    reference_name = f"PyTorch {torch.__version__} reference (NCHW float32)"
    runs = [(reference_name, train_reference)] + [
        (f"tf-autoencoder {s[0]}{' (the default here)' if s[1:] == default_setting else ''}",
         lambda s=s: train_ours(s)) for s in settings]
    speeds, test_bce = {name: [] for name, _ in runs}, {}
    for round_ in range(args.rounds):
        for name, train in runs:
            result = train()
            speeds[name].append(median_after_warmup(result["images_per_second"]))
            test_bce.setdefault(name, result["test_bce"])
            print(f"{f'round {round_ + 1}: ' if args.rounds > 1 else ''}{name}: "
                  f"{speeds[name][-1]:,.0f} images/s "
                  f"({speeds[name][-1] / speeds[reference_name][-1]:.2f}x), "
                  f"test BCE {result['test_bce']:.4f}", flush=True)
    rows = [(name, statistics.median(speeds[name]), test_bce[name]) for name, _ in runs]
    ref_speed = rows[0][1]

    seed_bce = {"reference": [test_bce[reference_name]],
                "default": [bce for name, _, bce in rows if name.endswith("(the default here)")]}
    default_runs = [s for s in settings if s[1:] == default_setting]
    for seed in range(1, args.seeds if default_runs else 1):
        seed_bce["reference"].append(train_reference(seed)["test_bce"])
        seed_bce["default"].append(train_ours(default_runs[0], seed)["test_bce"])
        print(f"seed {seed}: test BCE reference {seed_bce['reference'][-1]:.4f}, "
              f"default {seed_bce['default'][-1]:.4f}", flush=True)
    pipeline = pipeline_speed(splits)
    print(f"input pipeline with noise: {pipeline:,.0f} images/s", flush=True)
    if args.quick:
        return rows
    memory = peak_memory_of_training_run(args.data_dir)
    print(f"peak memory of a train.py run: {memory:.2f} GiB", flush=True)

    best_tf = max(row[1] for row in rows[1:])
    subset = args.settings != "all"
    lines = [
        "## Training speed against the PyTorch reference"
        + (": selected settings" if subset else ""),
        "",
        f"`python benchmarks/train_speed.py --epochs {epochs}"
        f"{f' --rounds {args.rounds}' if args.rounds > 1 else ''}"
        f"{f' --seeds {args.seeds}' if args.seeds > 1 else ''}"
        f"{f' --settings {chr(34)}{args.settings}{chr(34)}' if subset else ''}` on {datetime.date.today()}, "
        f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} threads for both frameworks "
        f"(CPU replicas: {args.threads} of one thread per op); "
        f"{len(splits.train):,} training images ({splits.source}), batch 256, the 7,873-weight "
        "model, sigmoid cross-entropy, Adam. images/s is the median of the epochs after the "
        f"first{f', then the median over {args.rounds} rounds run in turn' if args.rounds > 1 else ''}; "
        f"test BCE is after {epochs} epochs{' of the first round' if args.rounds > 1 else ''}.",
        "",
        "| setting | images/s | vs PyTorch | test BCE |"
        + (" images/s by round | vs PyTorch by round |" if args.rounds > 1 else ""),
        "|---|---:|---:|---:|" + ("---|---|" if args.rounds > 1 else ""),
    ]
    # A round's ratio pairs runs made minutes apart, so it is less exposed to a shared
    # machine's slow spells than the ratio of medians.
    lines += [f"| {name} | {speed:,.0f} | {speed / ref_speed:.2f}x | {bce:.4f} |"
              + (f" {', '.join(f'{v:,.0f}' for v in speeds[name])} | "
                 + ", ".join(f"{v / r:.2f}x" for v, r in zip(speeds[name], speeds[reference_name]))
                 + " |" if args.rounds > 1 else "")
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
    if subset:  # a separate section, so the full table stays
        write_section("\n".join(lines), SUBSET_BEGIN, SUBSET_END)
    else:
        write_section("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
