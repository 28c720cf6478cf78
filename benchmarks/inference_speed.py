"""Inference speed of the exports in their runtimes: SavedModel (TensorFlow), model.tflite
(LiteRT with XNNPACK) and the .onnx files (ONNX Runtime), against the Keras model's predict.

    python benchmarks/inference_speed.py            # trains 1 epoch on the MNIST sample first
    python benchmarks/inference_speed.py --model_dir mnist_training   # a finished run
    python benchmarks/inference_speed.py --threads 1  # one thread per runtime
    python benchmarks/inference_speed.py --quick    # a smoke run; writes nothing

For `encode` and `serving_default` in each runtime: latency at batch 1 (p50, p99 over
--calls calls, the runtimes taking turns in blocks of 10 calls, so that the shared
machine's changing load falls on all of them alike) and throughput at batch --batch. Every runtime
gets --threads threads for an op (TensorFlow's intra-op pool, ONNX Runtime's intra-op
threads, LiteRT's num_threads). Also the exported files' sizes. The model is exported
into a temporary folder (the run's own export/ is not touched). Writes its section of
benchmarks/RESULTS.md (between its markers).
"""
from __future__ import annotations

import argparse
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


BLOCK = 10  # batch-1 calls in a row before the next runtime's turn


def latencies_ms(calls: dict, count: int) -> dict:
    """p50 and p99 (ms) over `count` timed calls of each of `calls` (name -> function),
    taking turns in blocks of BLOCK calls: the machine's changing load falls on all alike,
    and each block runs with its own model in the caches, as a server would."""
    for call in calls.values():
        call()  # warm-up: traces, allocates, resizes
    times = {name: [] for name in calls}
    for _ in range(max(1, count // BLOCK)):
        for name, call in calls.items():
            for _ in range(min(BLOCK, count)):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: (float(np.percentile(t, 50)), float(np.percentile(t, 99)))
            for name, t in times.items()}


def throughput(call, batch: int, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return batch * repeats / (time.perf_counter() - start)


def folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="batch-1 calls per measurement")
    parser.add_argument("--batch", type=int, default=256, help="the throughput's batch size")
    parser.add_argument("--repeats", type=int, default=20, help="calls at --batch")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads per op, the same for every runtime (default: one per core)")
    parser.add_argument("--model_dir", default=None,
                        help="a finished run to measure (its model.keras); default: train one "
                             "epoch on the MNIST sample in a temporary folder")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.model_dir and not os.path.isfile(os.path.join(args.model_dir, "model.keras")):
        parser.error(f"{args.model_dir} holds no finished run (model.keras): train one with "
                     "train.py, or leave out --model_dir")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    calls, repeats = (5, 2) if args.quick else (args.calls, args.repeats)

    import keras
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert import __version__ as litert_version

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    from tf_autoencoder.model_dir import load_finished_run
    from tf_autoencoder.serving.export import export_model_dir
    from tf_autoencoder.model.layout import to_model_layout
    from tf_autoencoder.serving.onnx import FILES as ONNX_FILES, OnnxModel
    from tf_autoencoder.serving.tflite import FILE as TFLITE_FILE, TFLiteModel

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or os.path.join(tmp, "run")
        if not args.model_dir:
            subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--dataset",
                            "mnist_sample", "--epochs", "1", "--seed", "0",
                            "--embedding_images", "0", "--model_dir", model_dir],
                           check=True, stdout=subprocess.DEVNULL)
        export = export_model_dir(model_dir, os.path.join(tmp, "export"),
                                  ("saved_model", "tflite", "onnx"))
        model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
        saved = tf.saved_model.load(export)
        lite = TFLiteModel(os.path.join(export, TFLITE_FILE), num_threads=args.threads)
        onnx = OnnxModel({signature: os.path.join(export, ONNX_FILES[signature])
                          for signature in ("encode", "serving_default")},
                         intra_op_threads=args.threads)
        sizes = [("SavedModel (saved_model.pb + variables/)",
                  os.path.getsize(os.path.join(export, "saved_model.pb"))
                  + folder_size(os.path.join(export, "variables"))),
                 (f"`{TFLITE_FILE}` (all four signatures)",
                  os.path.getsize(os.path.join(export, TFLITE_FILE)))]
        sizes += [(f"`{name}`", os.path.getsize(os.path.join(export, name)))
                  for name in ONNX_FILES.values()]

        config = load_finished_run(model_dir)
        rng = np.random.default_rng(0)
        one = rng.random((1, *config.image_shape), np.float32)  # NHWC, as the exports take
        many = rng.random((args.batch, *config.image_shape), np.float32)
        keras_one, keras_many = (to_model_layout(x, config.data_format) for x in (one, many))
        signatures = saved.signatures
        out = {"encode": "codes", "serving_default": "reconstructions"}

        def saved_model(signature, x):
            return lambda: signatures[signature](images=tf.constant(x))[out[signature]].numpy()

        rows = {}  # name -> (batch-1 call, batch call)
        for signature in ("encode", "serving_default"):
            rows[f"SavedModel (TensorFlow) `{signature}`"] = (saved_model(signature, one),
                                                            saved_model(signature, many))
            rows[f"LiteRT, XNNPACK `{signature}`"] = (
                lambda s=signature: lite.run(s, one), lambda s=signature: lite.run(s, many))
            rows[f"ONNX Runtime `{signature}`"] = (
                lambda s=signature: onnx.run(s, one), lambda s=signature: onnx.run(s, many))
        rows["Keras `model.encoder.predict`"] = (
            lambda: model.encoder.predict(keras_one, verbose=0),
            lambda: model.encoder.predict(keras_many, batch_size=args.batch, verbose=0))
        rows["Keras `model.predict`"] = (
            lambda: model.predict(keras_one, verbose=0),
            lambda: model.predict(keras_many, batch_size=args.batch, verbose=0))

        latency = latencies_ms({name: single for name, (single, _) in rows.items()}, calls)
        results = []
        for name, (_, batched) in rows.items():
            p50, p99 = latency[name]
            results.append((name, p50, p99, throughput(batched, args.batch, repeats)))
            print(f"{name}: batch 1 p50 {p50:.3f} ms, p99 {p99:.3f} ms; batch {args.batch:,} "
                  f"{results[-1][3]:,.0f} images/s", flush=True)
        for name, size in sizes:
            print(f"{name}: {size:,} bytes")
    if args.quick:
        return results
    base = {signature: latency[f"SavedModel (TensorFlow) `{signature}`"][0]
            for signature in ("encode", "serving_default")}
    command = (f"python benchmarks/inference_speed.py --calls {calls} --batch {args.batch} "
               f"--repeats {repeats}"
               + (f" --threads {args.threads}" if args.threads != os.cpu_count() else "")
               + (f" --model_dir {args.model_dir}" if args.model_dir else ""))
    lines = [
        "## Inference: SavedModel, LiteRT and ONNX Runtime" + (
            f", {args.threads} thread(s) per op" if args.threads != os.cpu_count() else ""),
        "",
        f"`{command}` on {datetime.date.today()}, {cpu_model()}, {os.cpu_count()} cores "
        f"(a shared machine); TensorFlow {tf.__version__}, LiteRT (ai-edge-litert) "
        f"{litert_version}, ONNX Runtime {onnxruntime.__version__}; {args.threads} thread(s) "
        "per op in each runtime. "
        + (f"The model in {args.model_dir}" if args.model_dir else "The default model (7,873 "
           "weights) after one epoch on the MNIST sample")
        + ", 28x28x1 float32 images. Batch-1 calls take turns across the rows in blocks of "
          f"{BLOCK}; p50/p99 over {calls:,} calls each. The speed-up is the SavedModel's p50 over the row's, for "
          "the same signature.",
        "",
        f"| what | batch 1 p50 | batch 1 p99 | speed-up (p50) | batch {args.batch:,} images/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, p50, p99, ips in results:
        signature = next((s for s in base if f"`{s}`" in name), None)
        ratio = f"{base[signature] / p50:.1f}x" if signature else ""
        lines.append(f"| {name} | {p50:.3f} ms | {p99:.3f} ms | {ratio} | {ips:,.0f} |")
    lines += ["", "| file | bytes |", "|---|---:|"]
    lines += [f"| {name} | {size:,} |" for name, size in sizes]
    # One section per thread setting, so runs with and without --threads both stay.
    tag = "inference_speed" + (f"_threads{args.threads}" if args.threads != os.cpu_count() else "")
    write_section("\n".join(lines), f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->")
    return results


if __name__ == "__main__":
    main()
