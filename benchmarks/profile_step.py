"""Where a training step's time goes: TensorFlow's profiler on `fit` of the default model.

    python benchmarks/profile_step.py                       # Fashion-MNIST, this machine's default
    python benchmarks/profile_step.py --precision float32 --steps 20
    python benchmarks/profile_step.py --distribute mirrored --cpu_replicas 2
    python benchmarks/profile_step.py --quick               # a smoke run on the MNIST sample

Writes a profile to --logdir (open it in TensorBoard's Profile tab, which needs
`pip install tensorboard-plugin-profile`) and prints the operations that took the most
time per step, summed over TensorFlow's threads (so the total exceeds the step time on
several cores).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from tf_autoencoder.logs import set_up_logging  # noqa: E402

set_up_logging(verbose=False)  # before TensorFlow loads

from tf_autoencoder import Config, build_autoencoder  # noqa: E402
from tf_autoencoder.data import pipeline  # noqa: E402
from tf_autoencoder.data import sources  # noqa: E402
from train_speed import FASHION_MNIST, ensure_fashion_mnist  # noqa: E402


def op_table(logdir: str) -> list[dict]:
    """Per-op rows of the profile in `logdir`: type, name, occurrences, self time (us)."""
    # The converter TensorBoard's profile plugin uses; it ships inside TensorFlow.
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    raw, _ = profiler.xspace_to_tools_data(paths, "framework_op_stats")
    table = json.loads(raw)[0]
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, [cell.get("v") for cell in row["c"]])) for row in table["rows"]]
    return [r for r in rows if r["host_or_device"] == "Host" and r["type"] != "IDLE"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=FASHION_MNIST)
    parser.add_argument("--precision", default="auto", help="auto, float32 or mixed_bfloat16")
    parser.add_argument("--data_format", default="NHWC")
    parser.add_argument("--distribute", default="none",
                        help="none (one device, train.py's default) or mirrored with "
                             "--cpu_replicas")
    parser.add_argument("--cpu_replicas", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    parser.add_argument("--top", type=int, default=25, help="ops to print")
    parser.add_argument("--logdir", default="profile_step_logs")
    parser.add_argument("--quick", action="store_true", help="MNIST sample, 2 steps")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tf_autoencoder.run.distribute import describe, make_strategy
    from tf_autoencoder.model.precision import resolve_precision
    from tf_autoencoder.run.training import compile_model

    if args.quick:
        splits, steps = sources.load_mnist_sample(), 2
    else:
        ensure_fashion_mnist(args.data_dir)
        splits, steps = sources.load_idx_dir(args.data_dir), args.steps
    config = Config(image_shape=splits.image_shape, data_format=args.data_format,
                    precision=args.precision, distribute=args.distribute,
                    cpu_replicas=args.cpu_replicas, seed=0).validate()
    strategy = make_strategy(config)  # before TensorFlow runs anything
    config.precision = resolve_precision(config.precision, on_cpu=bool(config.cpu_replicas) or None)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_autoencoder(config)
        compile_model(model, config)
    train = pipeline.make_dataset(splits.train.images, batch_size=256, training=True,
                              data_format=config.data_format, seed=0)
    model.fit(train.take(steps), verbose=0)  # traces and warms up
    start = time.perf_counter()
    model.fit(train.take(steps), verbose=0)
    step_ms = (time.perf_counter() - start) / steps * 1000
    tf.profiler.experimental.start(args.logdir)
    model.fit(train.take(steps), verbose=0)
    tf.profiler.experimental.stop()

    rows = op_table(args.logdir)
    per_step = lambda us: us / steps / 1000  # noqa: E731
    print(f"{config.data_format} {config.precision}, {describe(strategy)}: {step_ms:.1f} ms per "
          f"step of 256 unprofiled; profile in {args.logdir}")
    print(f"ops' self time per step, all threads: {per_step(sum(r['total_self_time'] for r in rows)):.1f} ms")
    by_type = collections.Counter()
    for r in rows:
        by_type[r["type"]] += r["total_self_time"]
    print("\nby op type (ms per step):")
    for op_type, us in by_type.most_common(args.top):
        print(f"  {per_step(us):7.2f}  {op_type}")
    print("\nby op (ms per step):")
    for r in sorted(rows, key=lambda r: -r["total_self_time"])[:args.top]:
        print(f"  {per_step(r['total_self_time']):7.2f}  {r['type']:<34} {r['operation'][-70:]}")
    return rows


if __name__ == "__main__":
    main()
