#!/usr/bin/env python
"""What ending a command costs: `predict` on one image, ended as the scripts end it now
(cli.exit_with: no teardown of the interpreter's modules once TensorFlow is loaded)
against ended by sys.exit (the teardown), alternated, each in a fresh process.

    python benchmarks/command_exit.py --pairs 10
    python benchmarks/command_exit.py --quick      # a smoke run: one pair, printed only

Trains a one-epoch run on the MNIST sample first (in a temporary folder), unless --run
names one. Writes its section of benchmarks/RESULTS.md (between its markers; not with
--quick).
"""
import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from train_speed import cpu_model, write_section  # noqa: E402

BEGIN, END = "<!-- command_exit:begin -->", "<!-- command_exit:end -->"
# The two ways to end the same command, run as `python -c WAY predict RUN IMAGE`.
WAYS = {
    "exit_with (now)": "from tf_autoencoder.cli import exit_with, main; "
                       "exit_with(main(prog='tf-autoencoder'))",
    "sys.exit (before)": "import sys; from tf_autoencoder.cli import main; "
                         "sys.exit(main(prog='tf-autoencoder'))",
}


def timed_run(args, cwd) -> tuple[float, float]:
    """(wall s, CPU s) of `python *args` to its end; it must succeed."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{args[:2]} failed: {process.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--run", help="a finished run of 28x28 grey images to predict with "
                                      "(default: a one-epoch MNIST-sample run, trained first)")
    parser.add_argument("--quick", action="store_true",
                        help="one pair and no warm-up pair, printed only")
    args = parser.parse_args(argv)
    pairs = 1 if args.quick else args.pairs
    with tempfile.TemporaryDirectory() as tmp:
        run, image = args.run or os.path.join(tmp, "run"), os.path.join(tmp, "digit.png")
        if not args.run:
            subprocess.run([sys.executable, "train.py", "--dataset", "mnist_sample", "--epochs",
                            "1", "--model_dir", run], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)).save(image)
        measured = {way: [] for way in WAYS}
        warm_up = 0 if args.quick else 1  # a pair that warms the file cache, not counted
        for pair in range(warm_up + pairs):
            for way, code in WAYS.items():
                figures = timed_run(["-c", code, "predict", run, image, "--output_dir",
                                     os.path.join(tmp, "out")], REPO)
                if pair >= warm_up:
                    measured[way].append(figures)
    now, before = (measured[way] for way in WAYS)
    ratios = [a[0] / b[0] for a, b in zip(now, before)]
    rows = [f"| {way} | {statistics.median(w for w, _ in runs):.2f} | "
            f"{statistics.median(c for _, c in runs):.2f} |" for way, runs in measured.items()]
    text = "\n".join([
        "## Ending a command: without the interpreter's teardown",
        "",
        f"`python benchmarks/command_exit.py --pairs {pairs}` on "
        f"{datetime.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores; "
        "`predict` of one 28x28 PNG with a one-epoch MNIST-sample run, each in a fresh "
        "process, the two endings alternated, after one uncounted pair. Medians.",
        "",
        "| ending | wall (s) | CPU (s) |",
        "|---|---:|---:|",
        *rows,
        "",
        f"Wall time, now / before, pair by pair: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f} to {max(ratios):.2f}).",
    ])
    print(text)
    if not args.quick:
        write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
