"""The old spelling `python -m tf_autoencoder.predict`: now `tf-autoencoder predict`.
Kept thin: it imports only the command line, as `tf-autoencoder predict` does."""
if __name__ == "__main__":
    from .cli import exit_with, main

    exit_with(main(command="predict", prog="python -m tf_autoencoder.predict"))
