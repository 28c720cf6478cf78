"""`python -m tf_autoencoder COMMAND ...`, the same as `tf-autoencoder COMMAND ...`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tf_autoencoder"))
