"""The old spelling `python -m tf_autoencoder.sample`: now `tf-autoencoder sample`.
Kept thin: it imports only the command line, as `tf-autoencoder sample` does."""
if __name__ == "__main__":
    from .cli import exit_with, main

    exit_with(main(command="sample", prog="python -m tf_autoencoder.sample"))
