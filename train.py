#!/usr/bin/env python
"""Train the autoencoder: `python train.py --help` lists the flags (`tf-autoencoder train`)."""
import sys

from tf_autoencoder.cli import main

if __name__ == "__main__":
    sys.exit(main(command="train", prog="train.py"))
