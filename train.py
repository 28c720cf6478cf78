#!/usr/bin/env python
"""Train the autoencoder: `python train.py --help` lists the flags (`tf-autoencoder train`)."""
from tf_autoencoder.cli import exit_with, main

if __name__ == "__main__":
    exit_with(main(command="train", prog="train.py"))
