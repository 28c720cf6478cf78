#!/usr/bin/env python
"""Train the autoencoder: `python train.py --help` lists the flags."""
import os
import sys

# Quieten TensorFlow's C++ start-up logging (CUDA probing on CPU-only machines);
# errors that matter still reach Python as exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tf_autoencoder.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
