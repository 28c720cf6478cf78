#!/usr/bin/env python
"""Codes of test images for TensorBoard's projector, or a picture of reconstructions, from
a trained model: `python export_embeddings.py --help` lists the flags."""
import os
import sys

# Quieten TensorFlow's C++ start-up logging, as train.py does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tf_autoencoder.cli import export_embeddings_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(export_embeddings_main())
