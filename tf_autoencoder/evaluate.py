"""The old spelling `python -m tf_autoencoder.evaluate`: now `tf-autoencoder evaluate`
(`python -m tf_autoencoder evaluate`), which commands.evaluate runs."""
if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(command="evaluate", prog="python -m tf_autoencoder.evaluate"))
