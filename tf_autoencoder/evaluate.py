"""python -m tf_autoencoder.evaluate MODEL_DIR: image and code quality of a trained run.

Prints a table and writes MODEL_DIR/evaluation.json (see tf_autoencoder.evaluation).
"""
from __future__ import annotations

import os
import sys

from .cli import _fail, _Parser, parse_finished_run


def build_parser():
    p = _Parser(prog="python -m tf_autoencoder.evaluate",
                description="BCE, MSE, PSNR and SSIM of the test reconstructions, and "
                            "linear-probe and k-NN accuracy of the codes.")
    p.add_argument("model_dir", help="the --model_dir of a finished training run")
    p.add_argument("--probe_samples", type=int, default=None, metavar="N",
                   help="fit the probe and k-NN on N random training images "
                        "(default: the whole training split)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads
    parser = build_parser()
    args, config = parse_finished_run(parser, argv)
    if args.probe_samples is not None and args.probe_samples < 2:
        parser.error("--probe_samples must be at least 2")
    from . import data

    try:
        splits = data.load_data(config.dataset, config.data_dir)
    except (data.DataError, OSError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    from .evaluation import evaluate_run, format_table

    try:
        report = evaluate_run(args.model_dir, config, splits, probe_samples=args.probe_samples)
    except OSError as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    print(format_table(report))
    print(f"Wrote {os.path.join(args.model_dir, 'evaluation.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
