"""The old spelling `python -m tf_autoencoder.sample`: now `tf-autoencoder sample`
(`python -m tf_autoencoder sample`), which commands.sample runs."""
if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(command="sample", prog="python -m tf_autoencoder.sample"))
