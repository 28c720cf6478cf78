"""Command lines. Bad input ends as one line on stderr and a non-zero exit:
2 for usage errors, 1 for failures while running (add --verbose for the traceback)."""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading

from .config import DISTRIBUTES, DOWNSAMPLES, MODELS, PRECISIONS, UPSAMPLES, Config, ConfigError
from .distribute import describe, make_strategy, read_tf_config
from .model_dir import CONFIG_FILE, EXPORT_DIR, FINAL_MODEL, find_saved_model, is_saved_model


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
    g.add_argument("--model", choices=MODELS, default=d.model)
    g.add_argument("--num_filters", type=_sizes, default=d.num_filters, metavar="16,8,8",
                   help="filters per encoder block (convolutional)")
    g.add_argument("--hidden_units", type=_sizes, default=d.hidden_units, metavar="128,64,32",
                   help="units per encoder layer (fully_connected)")
    g.add_argument("--data_format", default="NHWC",
                   help="NHWC or NCHW (channels_last / channels_first accepted too)")
    g.add_argument("--dropout", type=float, default=None,
                   help="keep probability of dropout after hidden layers (default: no dropout)")
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help="L2 on kernels")
    g.add_argument("--downsample", choices=DOWNSAMPLES, default=d.downsample,
                   help="encoder: 2x2 max pooling or a stride-2 3x3 conv (convolutional, variational)")
    g.add_argument("--upsample", choices=UPSAMPLES, default=d.upsample,
                   help="decoder: stride-2 transposed conv or nearest resize + 3x3 conv")
    g.add_argument("--code_l1", type=float, default=d.code_l1,
                   help="L1 penalty on the code, per image (sparse codes)")
    g.add_argument("--beta", type=float, default=d.beta,
                   help="weight of the KL term (variational)")
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
    g.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism: the same --seed gives a bit-identical run on "
                        "the same machine (slower)")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="mixed_bfloat16: compute in bfloat16, keep float32 weights; auto "
                        "(default): mixed_bfloat16 when training on a CPU with AMX or AVX-512 "
                        "bfloat16, else float32 (on a GPU too)")
    g = p.add_argument_group("distribution (tf.distribute; see the README)")
    g.add_argument("--distribute", choices=DISTRIBUTES, default=d.distribute,
                   help="mirrored: every local GPU; multi_worker: the workers in TF_CONFIG. "
                        "--batch_size stays the global batch, split across the replicas")
    g.add_argument("--cpu_replicas", type=int, default=None, metavar="N",
                   help="with --distribute mirrored: train on N logical devices split from "
                        "the CPU instead of the GPUs (to try the mirrored path without GPUs)")
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
        downsample=args.downsample, upsample=args.upsample, code_l1=args.code_l1, beta=args.beta,
        dataset=args.dataset or "mnist", data_dir=args.data_dir, noise_factor=args.noise_factor,
        loss=args.loss, learning_rate=args.learning_rate, batch_size=args.batch_size,
        epochs=args.epochs, seed=args.seed, deterministic=args.deterministic,
        precision=args.precision, distribute=args.distribute, cpu_replicas=args.cpu_replicas,
        model_dir=args.model_dir, save_images=args.save_images,
        embedding_images=args.embedding_images)


def _fail(prog: str, message: str, code: int, verbose: bool) -> int:
    if verbose:
        raise
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def train_main(argv=None) -> int:
    """train.py: check everything that can be checked before TensorFlow loads, then train."""
    parser = build_train_parser()
    args = parser.parse_args(argv)
    _interrupted_before_training.clear()
    watch = threading.current_thread() is threading.main_thread()  # signals need the main thread
    previous = signal.signal(signal.SIGINT, _remember_interrupt) if watch else None
    try:
        return _train(parser, args)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop, which handles its own
        print(f"{parser.prog}: interrupted; rerun the same command to resume from the last "
              "saved checkpoint", file=sys.stderr)
        return 130
    finally:
        if watch:
            signal.signal(signal.SIGINT, previous)


_interrupted_before_training = []


def _remember_interrupt(signum, frame):
    """Ctrl-C before training: raise KeyboardInterrupt as usual, and remember it, because
    an import that catches every exception can swallow it; _train checks before training."""
    _interrupted_before_training.append(signum)
    raise KeyboardInterrupt


def _make_strategy(config: Config):
    """distribute.make_strategy, and a line saying what it set up."""
    strategy = make_strategy(config)
    print(f"Distribute: {describe(strategy)}")
    return strategy


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args).validate()
        role = read_tf_config() if config.distribute == "multi_worker" else None
    except ConfigError as e:
        parser.error(str(e))
    from . import data
    from .files import ModelDirLock
    from .model_dir import check_model_dir_path, prepare_model_dir

    strategy = None  # one device: TensorFlow loads only when training starts

    def set_up_strategy():  # before TensorFlow runs anything: devices are fixed from then on
        nonlocal strategy
        if config.distribute != "none" and strategy is None:
            strategy = _make_strategy(config)

    try:
        splits = data.load_data(config.dataset, config.data_dir,
                                fallback_to_sample=args.dataset is None and not args.data_dir,
                                before_tensorflow=set_up_strategy)
        if not config.data_dir:
            config.dataset = splits.name  # the sample, if it stood in for an unreachable TFDS dataset
        config.image_shape, config.data_source = splits.image_shape, splits.source
        config.check_data(len(splits.train))
        check_model_dir_path(config.model_dir)
        if not args.overwrite:
            prepare_model_dir(config)  # its refusals, before anything is written
        set_up_strategy()
        chief = role is None or role.is_chief  # only the chief writes model_dir
        # One run per model_dir: held until this process ends.
        lock = ModelDirLock(config.model_dir, "starting another run there").acquire() if chief else None
        previous = None if args.overwrite else prepare_model_dir(config)  # as of now, locked
        if args.overwrite and chief:
            prepare_model_dir(config, overwrite=True)
    except ConfigError as e:
        return _fail(parser.prog, str(e), 2, args.verbose)
    except (data.DataError, OSError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    with contextlib.closing(lock) if lock else contextlib.nullcontext():
        return _train_locked(parser, args, config, splits, previous, strategy)


def _train_locked(parser, args, config, splits, previous, strategy) -> int:
    if config.seed is None:  # resume with the earlier run's seed; else draw one and record it
        config.seed = previous.seed if previous else random.SystemRandom().randrange(2**31)
    print(f"Data: {splits.source}: {len(splits.train):,} train / {len(splits.validation):,} "
          f"validation / {len(splits.test):,} test images of "
          f"{'x'.join(map(str, splits.image_shape))}")

    from .precision import resolve_precision
    from .training import TrainingDiverged, TrainingInterrupted, train

    # CPU replicas compute on the CPU whatever GPUs there are.
    config.precision = resolve_precision(config.precision, on_cpu=bool(config.cpu_replicas) or None)
    if config.precision == "mixed_bfloat16":
        print("Precision: mixed_bfloat16 (bfloat16 compute, float32 weights); "
              "--precision float32 for float32 throughout")

    if _interrupted_before_training:
        raise KeyboardInterrupt
    try:
        train(config, splits, strategy=strategy)
    except (OSError, TrainingDiverged) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    except TrainingInterrupted as e:
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def parse_finished_run(parser: argparse.ArgumentParser, argv=None):
    """Parses `argv` and loads the config of the finished run in its `model_dir`;
    a missing or unfinished run is a usage error (one line, exit 2)."""
    from .model_dir import load_finished_run

    args = parser.parse_args(argv)
    try:
        return args, load_finished_run(args.model_dir)
    except ConfigError as e:
        parser.error(str(e))


def build_export_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=(
        "Export a finished run's model as a SavedModel for serving, as the next version "
        f"MODEL_DIR/{EXPORT_DIR}/<1, 2, ...>/. Signatures, NHWC float32 images in [0, 1] "
        "with any batch size: serving_default (images -> reconstructions), encode "
        "(images -> codes), decode (codes -> reconstructions)."))
    p.add_argument("model_dir", help=f"a run that train.py finished ({CONFIG_FILE}, {FINAL_MODEL})")
    p.add_argument("--export_dir", default=None, metavar="DIR",
                   help=f"where the versions go (default: MODEL_DIR/{EXPORT_DIR})")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def export_main(argv=None, prog: str | None = None) -> int:
    """Exports MODEL_DIR/model.keras as a new SavedModel version; prints its path."""
    parser = build_export_parser(prog)
    args, _ = parse_finished_run(parser, argv)
    from .export import export_model_dir
    from .files import ModelDirLock

    try:
        with ModelDirLock(args.model_dir, "exporting it"):  # not while a run trains there
            path = export_model_dir(args.model_dir, args.export_dir)
    except (OSError, ValueError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    print(f"Exported {path}")
    return 0


def build_predict_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=(
        "Reconstruct image files with an exported autoencoder. Prints one line per image with "
        "its reconstruction error, a usable anomaly score: the mean squared error per pixel "
        "(0 to 1) between the image as the model sees it (converted to its greyscale or RGB, "
        "resized to its size, pixels scaled to [0, 1]) and its reconstruction. Higher means "
        "less like the training images. Files that cannot be read are reported and skipped; "
        "the exit status is then 1."))
    p.add_argument("model", metavar="EXPORT_OR_MODEL_DIR",
                   help=f"a SavedModel folder, an {EXPORT_DIR}/ folder or a model_dir "
                        "(its newest version is used)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, GIF or BMP files")
    p.add_argument("--output_dir", default="reconstructions", metavar="DIR",
                   help="where each IMAGE's <name>_reconstruction.png is written")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def predict_main(argv=None, prog: str | None = None) -> int:
    """Reconstructs and scores image files; exit 1 if any file failed."""
    parser = build_predict_parser(prog)
    args = parser.parse_args(argv)
    try:
        saved_model_dir = find_saved_model(args.model)
    except ConfigError as e:
        parser.error(str(e))
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file: give a directory")
    from .predict import ModelError, predict_files

    def error(message):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)

    try:
        failed = predict_files(saved_model_dir, args.images, args.output_dir, error=error)
    except (ModelError, OSError) as e:
        return _fail(parser.prog, str(e), 1, args.verbose)
    return 1 if failed else 0


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
    path = args.model_dir
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: give a training run's model_dir or a SavedModel")
    saved_model = is_saved_model(path)
    config_path = os.path.join(path, *([os.pardir, os.pardir] if saved_model else []), CONFIG_FILE)
    config = Config(dataset="mnist")
    if os.path.isfile(config_path):
        try:
            config = Config.load(config_path)
        except (ValueError, TypeError, OSError) as e:
            raise ConfigError(f"{config_path} cannot be read: {e}") from None
    elif not saved_model:
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
    parser = build_export_embeddings_parser()
    args = parser.parse_args(argv)
    try:
        config = _export_embeddings_config(args)
    except ConfigError as e:
        parser.error(str(e))
    from . import data, embeddings

    saved_model = is_saved_model(config.model_dir)
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
