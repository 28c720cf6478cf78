#!/usr/bin/env python
"""Where an epoch waits with the CPU idle: the same training (the post's model, IDX
Fashion-MNIST, batch 256, float32, 2 threads per op) fed three ways, each in a fresh
process, while a thread samples the process's CPU time every second.

    python benchmarks/epoch_starts.py --epochs 6
    python benchmarks/epoch_starts.py --quick      # a smoke run: the MNIST sample, printed only

The ways:
  - one dataset over all epochs, fitted with steps_per_epoch: what `train` does
    (make_training_epochs), so fit keeps one tf.data iterator for the whole run;
  - a dataset that fit iterates anew each epoch (`dataset.take(steps)`, no
    steps_per_epoch): a new tf.data iterator every epoch, with tf.data's autotuning on
    (its default);
  - the same with autotuning off (tf.data.Options().autotune.enabled = False).
Reports each epoch's images/s and the cores the process used, and how many of the
one-second samples around each epoch's start found it using no CPU at all. Writes its
section of benchmarks/RESULTS.md (between its markers; not with --quick).
"""
import argparse
import datetime
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from train_speed import (FASHION_MNIST, cpu_model, json_from_child, load_splits,  # noqa: E402
                         process_cpu_seconds, write_section)

BEGIN, END = "<!-- epoch_starts:begin -->", "<!-- epoch_starts:end -->"
WAYS = {
    "one": "one dataset over all epochs, steps_per_epoch (as `train`)",
    "anew": "a new iterator each epoch, autotuning on",
    "anew_no_autotune": "a new iterator each epoch, autotuning off",
}
IDLE_CORES = 0.02  # a one-second sample below this: the process was waiting, not working
BATCH = 256


def train(way: str, data_dir: str | None, epochs: int, max_steps: int | None) -> dict:
    """Trains `epochs` epochs fed `way`; the epochs' images/s and cores used, the cores
    the process used in each second (with the epochs' start times on the same clock),
    and the images an epoch trained."""
    import keras
    import tensorflow as tf

    from tf_autoencoder import Config, build_autoencoder
    from tf_autoencoder.data import pipeline
    from tf_autoencoder.run.training import compile_model

    splits = load_splits(data_dir)
    config = Config(image_shape=splits.image_shape, precision="float32", seed=0).validate()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    keras.utils.set_random_seed(0)
    model = build_autoencoder(config)
    compile_model(model, config)
    steps = len(splits.train) // BATCH if max_steps is None else max_steps

    seconds, clock0 = [], time.perf_counter()

    def sample():  # the cores this process used in each second
        before = (time.perf_counter(), process_cpu_seconds(os.getpid()))
        while True:
            time.sleep(1.0)
            now = (time.perf_counter(), process_cpu_seconds(os.getpid()))
            seconds.append((before[0] - clock0, (now[1] - before[1]) / (now[0] - before[0])))
            before = now

    threading.Thread(target=sample, daemon=True).start()
    epochs_seen, begun = [], []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun.append((time.perf_counter(), process_cpu_seconds(os.getpid())))

        def on_epoch_end(self, epoch, logs=None):
            clock, cpu = begun[-1]
            wall = time.perf_counter() - clock
            epochs_seen.append({"start": clock - clock0, "images_per_second": steps * BATCH / wall,
                                "cores": (process_cpu_seconds(os.getpid()) - cpu) / wall})

    if way == "one":
        data = pipeline.make_training_epochs(splits.train.images, batch_size=BATCH,
                                             epochs=range(epochs), seed=0)
        model.fit(data, steps_per_epoch=steps, epochs=epochs, callbacks=[Timer()], verbose=0)
    else:
        data = pipeline.make_dataset(splits.train.images, batch_size=BATCH, training=True,
                                     seed=0).take(steps)
        if way == "anew_no_autotune":
            options = tf.data.Options()
            options.autotune.enabled = False
            data = data.with_options(options)
        model.fit(data, epochs=epochs, callbacks=[Timer()], verbose=0)
    return {"epochs": epochs_seen, "seconds": list(seconds), "images_per_epoch": steps * BATCH}


def waits_at_starts(result: dict) -> list[int]:
    """For each epoch after the first: the one-second samples from 5 s before its start
    to 10 s after in which the process used no CPU."""
    return [sum(1 for t, cores in result["seconds"]
                if epoch["start"] - 5 <= t < epoch["start"] + 10 and cores < IDLE_CORES)
            for epoch in result["epochs"][1:]]


def speeds(result: dict) -> str:
    """The epochs' images/s, as the report and the progress lines show them."""
    return ", ".join(f"{e['images_per_second']:,.0f}" for e in result["epochs"])


def run_child(way: str, data_dir, epochs: int, max_steps) -> dict:
    """`train(way, ...)` in a fresh process (its own thread pools); its result."""
    return json_from_child([sys.executable, __file__, "--child",
                            json.dumps([way, data_dir, epochs, max_steps])], way)


def report(results: dict, images: int, epochs: int, command: list[str]) -> str:
    lines = [
        "## Where an epoch waits: one tf.data iterator for the run, or a new one each epoch",
        "",
        f"`python benchmarks/epoch_starts.py {' '.join(command)}` on {datetime.date.today()}, "
        f"{cpu_model()}, {os.cpu_count()} cores, float32, 2 threads per op: the post's model on "
        f"{images:,} images an epoch held in memory (Fashion-MNIST unless --quick), batch {BATCH}, {epochs} epochs, each way "
        "in a fresh process. Idle seconds: one-second samples of the process's CPU time, from "
        "5 s before each epoch's start to 10 s after (epochs 2 on), in which it used no CPU "
        f"(under {IDLE_CORES} cores).",
        "",
        "| way | images/s by epoch | cores used by epoch | idle seconds at epoch starts |",
        "|---|---|---|---|",
    ]
    for way, result in results.items():
        cores = ", ".join(f"{e['cores']:.2f}" for e in result["epochs"])
        waits = ", ".join(str(n) for n in waits_at_starts(result))
        lines.append(f"| {WAYS[way]} | {speeds(result)} | {cores} | {waits} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data_dir", default=FASHION_MNIST)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the MNIST sample, 3 epochs of 2 steps; writes nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(train(*json.loads(args.child))))
        return None
    if args.epochs < 2:
        parser.error("--epochs takes at least 2: the waits come between epochs")
    data_dir, epochs, max_steps = (None, 3, 2) if args.quick else (args.data_dir, args.epochs, None)
    results = {}
    for way in WAYS:
        results[way] = run_child(way, data_dir, epochs, max_steps)
        print(f"{WAYS[way]}: {speeds(results[way])} images/s; idle seconds at epoch starts: "
              f"{waits_at_starts(results[way])}", flush=True)
    text = report(results, results["one"]["images_per_epoch"], epochs,
                  sys.argv[1:] if argv is None else argv)
    print(text, flush=True)
    if not args.quick:
        write_section(text, BEGIN, END)
    return results


if __name__ == "__main__":
    main()
