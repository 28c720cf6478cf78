"""`python -m tf_autoencoder COMMAND ...`, the same as `tf-autoencoder COMMAND ...`."""
from .cli import exit_with, main

if __name__ == "__main__":
    exit_with(main(prog="python -m tf_autoencoder"))
