"""Command lines. Bad input ends as one line on stderr and a non-zero exit:
2 for usage errors, 1 for failures while running (add --verbose for the traceback)."""
from __future__ import annotations

import argparse
import random
import sys

from .config import Config, ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 16,8,8, got {text!r}")
    return sizes


def build_train_parser() -> argparse.ArgumentParser:
    d = Config()
    p = _Parser(prog="train.py", description="Train a (denoising) autoencoder on MNIST-like images.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["convolutional", "fully_connected"], default=d.model)
    g.add_argument("--num_filters", type=_sizes, default=d.num_filters, metavar="16,8,8",
                   help="filters per encoder block (convolutional)")
    g.add_argument("--hidden_units", type=_sizes, default=d.hidden_units, metavar="128,64,32",
                   help="units per encoder layer (fully_connected)")
    g.add_argument("--data_format", default="NHWC",
                   help="NHWC or NCHW (channels_last / channels_first accepted too)")
    g.add_argument("--dropout", type=float, default=None,
                   help="keep probability of dropout after hidden layers (default: no dropout)")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help="L2 on kernels")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="TFDS name (mnist, fashion_mnist, kmnist, ...) or mnist_sample "
                        "(default: mnist, or the MNIST sample when it cannot be downloaded)")
    g.add_argument("--data_dir", default=None,
                   help="folder of the four IDX files (gzipped or not); overrides --dataset")
    g.add_argument("--noise_factor", type=float, default=d.noise_factor,
                   help="std of Gaussian noise added to inputs (denoising)")
    g = p.add_argument_group("training")
    g.add_argument("--loss", choices=["bce", "mse"], default=d.loss,
                   help="bce: sigmoid cross-entropy on logits; mse: on sigmoid outputs")
    g.add_argument("--learning_rate", type=float, default=d.learning_rate)
    g.add_argument("--batch_size", type=int, default=d.batch_size)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    g = p.add_argument_group("output")
    g.add_argument("--model_dir", default=d.model_dir, help="where the run is written")
    g.add_argument("--save_images", default=None, metavar="DIR",
                   help="write a PNG of reconstructions to DIR after each epoch")
    g.add_argument("--embedding_images", type=int, default=d.embedding_images, metavar="N",
                   help="after training, write the codes of the first N test images (all of "
                        "a smaller test split) for TensorBoard's projector; 0: none")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a model_dir that holds a different model")
    g.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(
        model=args.model, num_filters=args.num_filters, hidden_units=args.hidden_units,
        data_format=args.data_format, dropout=args.dropout, weight_decay=args.weight_decay,
        dataset=args.dataset or "mnist", data_dir=args.data_dir, noise_factor=args.noise_factor,
        loss=args.loss, learning_rate=args.learning_rate, batch_size=args.batch_size,
        epochs=args.epochs, seed=args.seed, model_dir=args.model_dir,
        save_images=args.save_images, embedding_images=args.embedding_images)


def _fail(prog: str, message: str, code: int, verbose: bool) -> int:
    if verbose:
        raise
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv=None) -> int:
    """train.py: check everything that can be checked before TensorFlow loads, then train."""
    parser = build_train_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args).validate()
    except ConfigError as e:
        parser.error(str(e))
    from . import data
    from .model_dir import prepare_model_dir

    try:
        splits = data.load_data(config.dataset, config.data_dir,
                                fallback_to_sample=args.dataset is None and not args.data_dir)
        if not config.data_dir:
            config.dataset = splits.name  # the sample, if it stood in for an unreachable TFDS dataset
        config.image_shape, config.data_source = splits.image_shape, splits.source
        if config.batch_size > len(splits.train):
            raise ConfigError(f"batch_size {config.batch_size} is larger than the training set "
                              f"({len(splits.train)} images): lower --batch_size")
        previous = prepare_model_dir(config, args.overwrite)
    except ConfigError as e:
        return _fail(parser.prog, str(e), 2, args.verbose)
    except (data.DataError, OSError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    if config.seed is None:  # resume with the earlier run's seed; else draw one and record it
        config.seed = previous.seed if previous else random.SystemRandom().randrange(2**31)
    print(f"Data: {splits.source}: {len(splits.train):,} train / {len(splits.validation):,} "
          f"validation / {len(splits.test):,} test images of "
          f"{'x'.join(map(str, splits.image_shape))}")

    from .training import train

    try:
        train(config, splits)
    except OSError as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; rerun the same command to resume from the last "
              "finished epoch", file=sys.stderr)
        return 130
    return 0


# --- export_embeddings.py ---------------------------------------------------------------

def build_export_embeddings_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="export_embeddings.py",
                description="Latent codes of test images for TensorBoard's projector, or a "
                            "picture of reconstructions, from a trained model_dir or a SavedModel. "
                            "Settings default to the model_dir's config.json.")
    p.add_argument("--model_dir", default=Config().model_dir,
                   help="a training run's model_dir, or a SavedModel directory "
                        "(e.g. MODEL_DIR/export/1) (default: %(default)s)")
    p.add_argument("--what", choices=["embedding", "reconstruction"], default="embedding",
                   help="embedding: projector files of the codes; reconstruction: a PNG grid of "
                        "inputs, noisy inputs (denoising) and reconstructions (default: %(default)s)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="how many test images, from the first (default: 10,000 or the whole "
                        "test split for embedding, 10 for reconstruction)")
    p.add_argument("--output", default=None,
                   help="embedding: a directory (default MODEL_DIR/projector); reconstruction: "
                        "a PNG file (default MODEL_DIR/reconstructions.png); needed for a SavedModel")
    p.add_argument("--noise_factor", type=float, default=None,
                   help="std of the Gaussian noise added to the inputs, as in training "
                        "(default: the run's)")
    p.add_argument("--dropout", type=float, default=None,
                   help="keep probability of dropout, as in training (default: the run's); "
                        "dropout is off when computing codes and reconstructions")
    p.add_argument("--dataset", default=None, help="dataset to take test images from (default: the run's)")
    p.add_argument("--data_dir", default=None, help="folder of IDX files (default: the run's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the noise (default: the run's)")
    p.add_argument("--save_npy", action="store_true", help="embedding: also write codes.npy")
    p.add_argument("--save_tsv", action="store_true",
                   help="embedding: also write codes.tsv and labels.tsv")
    p.add_argument("--no_show", action="store_true",
                   help="reconstruction: do not open a window even when a display is available")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def _export_embeddings_config(args) -> Config:
    """The settings: the run's config.json (a SavedModel's is two levels up, if there),
    with the flags given on top. Raises ConfigError for bad input."""
    import os

    from .model_dir import CONFIG_FILE

    path = args.model_dir
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: give a training run's model_dir or a SavedModel")
    saved_model = os.path.isfile(os.path.join(path, "saved_model.pb"))
    candidates = [os.path.join(path, os.pardir, os.pardir, CONFIG_FILE)] if saved_model \
        else [os.path.join(path, CONFIG_FILE)]
    config = Config(dataset="mnist")
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                config = Config.load(candidate)
            except (ValueError, TypeError, OSError) as e:
                raise ConfigError(f"{candidate} cannot be read: {e}") from None
            break
    else:
        if not saved_model:
            raise ConfigError(f"{path} has no {CONFIG_FILE}: give the model_dir of a training run "
                              "or a SavedModel directory")
    if saved_model and not args.output:
        raise ConfigError("give --output when reading a SavedModel")
    config.model_dir = path
    for name in ("noise_factor", "dropout", "dataset", "data_dir", "seed"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.dataset and not args.data_dir:
        config.data_dir = None
    if args.images is not None and args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    return config.validate()


def export_embeddings_main(argv=None) -> int:
    """export_embeddings.py: the original's test_mnist_autoencoder.py, plus the projector."""
    import os

    parser = build_export_embeddings_parser()
    args = parser.parse_args(argv)
    try:
        config = _export_embeddings_config(args)
    except ConfigError as e:
        parser.error(str(e))
    from . import data, embeddings

    saved_model = embeddings.is_saved_model(config.model_dir)
    embedding = args.what == "embedding"
    output = args.output or os.path.join(
        config.model_dir, "projector" if embedding else "reconstructions.png")
    try:
        splits = data.load_data(config.dataset, config.data_dir)
        if not saved_model and config.image_shape and splits.image_shape != config.image_shape:
            raise ConfigError(f"the model was trained on {config.image_shape} images, "
                              f"{splits.source} has {splits.image_shape}")
        config.image_shape = config.image_shape or splits.image_shape
        count = min(args.images or (10_000 if embedding else 10), len(splits.test))
        test = data.Split(splits.test.images[:count], splits.test.labels[:count])
        model = (embeddings.load_saved_model(config.model_dir, config.batch_size) if saved_model
                 else embeddings.load_from_model_dir(config))
        if embedding:
            embeddings.export_embedding(model, test, output, noise_factor=config.noise_factor,
                                        seed=config.seed, save_npy=args.save_npy,
                                        save_tsv=args.save_tsv)
        else:
            grid = embeddings.export_reconstruction(model, test, output,
                                                    noise_factor=config.noise_factor,
                                                    seed=config.seed)
            if not args.no_show and embeddings.display_available():
                embeddings.show(grid, output)
    except ConfigError as e:
        return _fail(parser.prog, str(e), 2, args.verbose)
    except (data.DataError, embeddings.ModelError, OSError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    return 0
