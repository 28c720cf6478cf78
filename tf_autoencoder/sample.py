"""python -m tf_autoencoder.sample MODEL_DIR --n 64: a PNG grid of images a variational
model generates by decoding codes drawn from its prior N(0, I)."""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from .cli import _fail, _Parser, parse_finished_run


def build_parser():
    p = _Parser(prog="python -m tf_autoencoder.sample",
                description="Decode codes drawn from N(0, I) with a variational model's "
                            "decoder and write them as one PNG grid.")
    p.add_argument("model_dir", help="the --model_dir of a finished --model variational run")
    p.add_argument("--n", type=int, default=64, help="how many images")
    p.add_argument("--out", default=None,
                   help="PNG path (default: MODEL_DIR/samples.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn codes")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def generate(decoder, n: int, seed: int, channels_first: bool):
    """n images (n, H, W, C) in [0, 1]: sigmoid(decoder(codes)), codes ~ N(0, I)."""
    from keras import ops

    codes = np.random.default_rng(seed).standard_normal((n, *decoder.input_shape[1:]))
    images = ops.convert_to_numpy(ops.sigmoid(decoder.predict(codes.astype("float32"), verbose=0)))
    return images.transpose(0, 2, 3, 1) if channels_first else images


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads
    parser = build_parser()
    args, config = parse_finished_run(parser, argv)
    if config.model != "variational":
        parser.error(f"{args.model_dir} holds a {config.model} model: only a variational "
                     "model's codes follow N(0, I); train one with --model variational")
    if args.n < 1:
        parser.error("--n must be at least 1")
    out = args.out or os.path.join(args.model_dir, "samples.png")
    from .evaluation import load_model
    from .images import grid_rows, image_grid, write_png

    try:
        images = generate(load_model(args.model_dir).decoder, args.n, args.seed,
                          config.channels_first)
        write_png(out, image_grid(grid_rows(images, math.ceil(math.sqrt(args.n)))))
    except OSError as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    print(f"Wrote {args.n} generated images to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
