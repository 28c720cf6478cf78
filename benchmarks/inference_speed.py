"""Inference speed of an exported SavedModel against the Keras model's predict.

    python benchmarks/inference_speed.py            # trains 1 epoch on the MNIST sample first
    python benchmarks/inference_speed.py --model_dir mnist_training   # a finished run
    python benchmarks/inference_speed.py --quick    # a smoke run; writes nothing

Latency at batch 1 (p50, p99 over --calls calls) and throughput at batch 1,024 for the
SavedModel's `encode` and `serving_default` signatures and for `model.predict`.
Writes its section of benchmarks/RESULTS.md (between its markers).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

import numpy as np  # noqa: E402

from train_speed import cpu_model, write_section  # noqa: E402



def latency_ms(call, calls: int) -> tuple[float, float]:
    call()  # warm-up: traces and allocates
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(call, batch: int, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return batch * repeats / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="batch-1 calls per measurement")
    parser.add_argument("--repeats", type=int, default=20, help="batch-1,024 calls")
    parser.add_argument("--intra_op_threads", type=int, default=0,
                        help="threads per op (0: TensorFlow's default, one per core)")
    parser.add_argument("--model_dir", default=None,
                        help="a finished run to measure (its model.keras and export/1); default: "
                             "train one epoch on the MNIST sample in a temporary folder")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.model_dir and not (os.path.isfile(os.path.join(args.model_dir, "model.keras"))
                               and os.path.isdir(os.path.join(args.model_dir, "export", "1"))):
        parser.error(f"{args.model_dir} holds no finished run (model.keras and export/1): "
                     "train one with train.py, or leave out --model_dir")
    calls, repeats = (5, 2) if args.quick else (args.calls, args.repeats)

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)

    import tf_autoencoder.models  # noqa: F401  registers the model classes for loading

    given = contextlib.nullcontext(args.model_dir) if args.model_dir else None
    with given or tempfile.TemporaryDirectory() as model_dir:
        if not given:
            subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--dataset",
                            "mnist_sample", "--epochs", "1", "--seed", "0",
                            "--embedding_images", "0", "--model_dir", model_dir],
                           check=True, stdout=subprocess.DEVNULL)
        model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
        saved = tf.saved_model.load(os.path.join(model_dir, "export", "1"))
        encode, serve = saved.signatures["encode"], saved.signatures["serving_default"]
        rng = np.random.default_rng(0)
        one = tf.constant(rng.random((1, 28, 28, 1), np.float32))
        many = tf.constant(rng.random((1024, 28, 28, 1), np.float32))
        rows = [
            ("SavedModel `encode`", lambda: encode(images=one)["codes"].numpy(),
             lambda: encode(images=many)["codes"].numpy()),
            ("SavedModel `serving_default`", lambda: serve(images=one)["reconstructions"].numpy(),
             lambda: serve(images=many)["reconstructions"].numpy()),
            ("Keras `model.encoder.predict`", lambda: model.encoder.predict(one, verbose=0),
             lambda: model.encoder.predict(many, batch_size=1024, verbose=0)),
            ("Keras `model.predict`", lambda: model.predict(one, verbose=0),
             lambda: model.predict(many, batch_size=1024, verbose=0)),
        ]
        results = []
        for name, single, batch in rows:
            p50, p99 = latency_ms(single, calls)
            results.append((name, p50, p99, throughput(batch, 1024, repeats)))
            print(f"{name}: batch 1 p50 {p50:.3f} ms, p99 {p99:.3f} ms; batch 1,024 "
                  f"{results[-1][3]:,.0f} images/s", flush=True)
    if args.quick:
        return results
    lines = [
        "## Inference: SavedModel against Keras" + (
            f", {args.intra_op_threads} thread(s) per op" if args.intra_op_threads else ""),
        "",
        f"`python benchmarks/inference_speed.py --calls {calls} --repeats {repeats}"
        f"{f' --intra_op_threads {args.intra_op_threads}' if args.intra_op_threads else ''}"
        f"{f' --model_dir {args.model_dir}' if args.model_dir else ''}` on "
        f"{datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores; "
        + (f"the model in {args.model_dir}" if args.model_dir else "the default model (7,873 "
           "weights) after one epoch on the MNIST sample") + ", 28x28x1 float32 images.",
        "",
        "| what | batch 1 p50 | batch 1 p99 | batch 1,024 images/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {p50:.3f} ms | {p99:.3f} ms | {ips:,.0f} |"
              for name, p50, p99, ips in results]
    # One section per thread setting, so runs with and without --intra_op_threads both stay.
    tag = "inference_speed" + (f"_threads{args.intra_op_threads}" if args.intra_op_threads else "")
    write_section("\n".join(lines), f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->")
    return results


if __name__ == "__main__":
    main()
