"""The old spelling `python -m tf_autoencoder.export`: now `tf-autoencoder export`.
Kept thin: it imports only the command line, as `tf-autoencoder export` does."""
if __name__ == "__main__":
    from .cli import exit_with, main

    exit_with(main(command="export", prog="python -m tf_autoencoder.export"))
