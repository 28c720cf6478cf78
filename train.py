#!/usr/bin/env python
"""Train the autoencoder: `python train.py --help` lists the flags."""
import os
import sys

# Quieten TensorFlow's C++ start-up banners; real errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_autoencoder.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
