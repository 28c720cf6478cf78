#!/usr/bin/env python
"""Codes of test images for TensorBoard's projector, or a picture of reconstructions, from
a trained model: `python export_embeddings.py --help` (`tf-autoencoder embeddings`)."""
from tf_autoencoder.cli import exit_with, main

if __name__ == "__main__":
    exit_with(main(command="embeddings", prog="export_embeddings.py"))
