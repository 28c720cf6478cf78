"""The old spelling `python -m tf_autoencoder.evaluate`: now `tf-autoencoder evaluate`.
Kept thin: it imports only the command line, as `tf-autoencoder evaluate` does."""
if __name__ == "__main__":
    from .cli import exit_with, main

    exit_with(main(command="evaluate", prog="python -m tf_autoencoder.evaluate"))
