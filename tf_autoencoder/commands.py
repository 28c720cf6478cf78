"""What each command does once cli.py has parsed its arguments.

Every command checks what it can before TensorFlow loads (seconds), ends bad input with
one line and exit status 2 and failures with one line and exit status 1, and writes
nothing it cannot finish (see files.py). Heavy modules are imported inside the
commands, after those checks.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import threading

from .config import Config
from .errors import ConfigError, Interrupted
from .model_dir import (CONFIG_FILE, EVALUATION, ONNX_FILES, TFLITE_FILE, find_model,
                        is_saved_model, load_finished_run)

def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return COMMANDS[args.command](args, parser)


# --- train -------------------------------------------------------------------------------

def config_from_args(args: argparse.Namespace) -> Config:
    return Config(
        model=args.model, num_filters=args.num_filters, hidden_units=args.hidden_units,
        data_format=args.data_format, dropout=args.dropout, weight_decay=args.weight_decay,
        downsample=args.downsample, upsample=args.upsample,
        convs_per_block=args.convs_per_block, kernel_size=args.kernel_size,
        output_layer=args.output_layer, code_size=args.code_size, code_l1=args.code_l1, beta=args.beta,
        dataset=args.dataset or "mnist", data_dir=args.data_dir, noise_factor=args.noise_factor,
        loss=args.loss, learning_rate=args.learning_rate, lr_decay_rate=args.lr_decay_rate,
        lr_decay_steps=args.lr_decay_steps, batch_size=args.batch_size,
        epochs=args.epochs, seed=args.seed, deterministic=args.deterministic,
        precision=args.precision, distribute=args.distribute, cpu_replicas=args.cpu_replicas,
        model_dir=args.model_dir, save_images=args.save_images,
        embedding_images=args.embedding_images)


class CtrlCBeforeTraining:
    """While inside: Ctrl-C raises KeyboardInterrupt as usual and is remembered, because
    an import that catches every exception can swallow it; `seen` says whether one came.
    (The training loop handles its own Ctrl-C: see training.EpochCheckpoint.)"""

    def __init__(self):
        self.seen = False
        self.previous = None

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals need it
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def train(args, parser) -> int:
    """Checks everything that can be checked before TensorFlow loads, then trains."""
    try:
        with CtrlCBeforeTraining() as ctrl_c:
            return _check_then_train(args, parser, ctrl_c)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop
        raise Interrupted("interrupted; rerun the same command to resume from the last "
                          "saved checkpoint") from None


def _check_then_train(args, parser, ctrl_c: CtrlCBeforeTraining) -> int:
    try:
        config = config_from_args(args).validate()
        from .run.distribute import read_tf_config

        role = read_tf_config() if config.distribute == "multi_worker" else None
    except ConfigError as e:
        parser.error(str(e))
    from .data import sources
    from .run.distribute import describe, make_strategy
    from .files import ModelDirLock
    from .model_dir import check_model_dir_path, prepare_model_dir

    strategy = None  # one device: TensorFlow loads only when training starts

    def set_up_strategy():  # before TensorFlow runs anything: devices are fixed from then on
        nonlocal strategy
        if config.distribute != "none" and strategy is None:
            strategy = make_strategy(config)
            print(f"Distribute: {describe(strategy)}")

    splits = sources.load_data(config.dataset, config.data_dir,
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
    # One run per model_dir, until this process ends.
    lock = ModelDirLock(config.model_dir, "starting another run there").acquire() if chief else None
    previous = None if args.overwrite else prepare_model_dir(config)  # as of now, locked
    if args.overwrite and chief:
        prepare_model_dir(config, overwrite=True)
    try:
        if config.seed is None:  # resume with the earlier run's seed; else draw one, recorded
            config.seed = previous.seed if previous else random.SystemRandom().randrange(2**31)
        print(f"Data: {splits.source}: {len(splits.train):,} train / {len(splits.validation):,} "
              f"validation / {len(splits.test):,} test images of "
              f"{'x'.join(map(str, splits.image_shape))}")
        from .model.precision import resolve_precision
        from .run.training import train as train_run

        # CPU replicas compute on the CPU whatever GPUs there are.
        config.precision = resolve_precision(config.precision,
                                             on_cpu=bool(config.cpu_replicas) or None)
        if config.precision == "mixed_bfloat16":
            print("Precision: mixed_bfloat16 (bfloat16 compute, float32 weights); "
                  "--precision float32 for float32 throughout")
        if ctrl_c.seen:  # a Ctrl-C that an import swallowed
            raise KeyboardInterrupt
        train_run(config, splits, strategy=strategy)
        return 0
    finally:
        if lock:
            lock.release()


# --- export, predict ------------------------------------------------------------------------

def finished_run(args, parser) -> Config:
    """The config of the finished run in args.model_dir; a usage error if there is none."""
    try:
        return load_finished_run(args.model_dir)
    except ConfigError as e:
        parser.error(str(e))


def export(args, parser) -> int:
    """Exports MODEL_DIR/model.keras as a new SavedModel version, with the TFLite and ONNX
    files --format asks for beside it; prints its path and each file added beside it."""
    finished_run(args, parser)
    formats = list(dict.fromkeys(name for names in args.formats or [] for name in names))
    from .serving import formats as lib
    from .serving.export import export_model_dir
    from .files import ModelDirLock

    for fmt in formats:  # before the model loads, so a missing extra fails at once
        if fmt != "saved_model":
            lib.require(fmt, f"--format {fmt}")
    # Not while a run trains there, and no run starts there meanwhile.
    with ModelDirLock(args.model_dir, "exporting it", shared=True):
        path = export_model_dir(args.model_dir, args.export_dir, formats)
    print(f"Exported {path}")
    for name in ([TFLITE_FILE] if "tflite" in formats else []) + (
            list(ONNX_FILES.values()) if "onnx" in formats else []):
        print(f"Wrote {os.path.join(path, name)}")
    return 0


def predict(args, parser) -> int:
    """Reconstructs and scores image files; exit 1 if any file failed."""
    try:
        model_path = find_model(args.model)
    except ConfigError as e:
        parser.error(str(e))
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file: give a directory")
    from .serving.predict import predict_files

    def error(message):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)

    failed = predict_files(model_path, args.images, args.output_dir, error=error)
    return 1 if failed else 0


# --- evaluate, sample ----------------------------------------------------------------------

def evaluate(args, parser) -> int:
    """Image and code quality of a finished run: a table, and MODEL_DIR/evaluation.json."""
    config = finished_run(args, parser)
    if args.probe_samples is not None and args.probe_samples < 2:
        parser.error("--probe_samples must be at least 2")
    from .data import sources

    splits = sources.load_data(config.dataset, config.data_dir)
    from .run.evaluation import evaluate_run, format_table

    report = evaluate_run(args.model_dir, config, splits, probe_samples=args.probe_samples)
    print(format_table(report))
    print(f"Wrote {os.path.join(args.model_dir, EVALUATION)}")
    if "latent_2d" in report:
        print(f"Wrote {report['latent_2d']}")
    return 0


def sample(args, parser) -> int:
    """A PNG grid of images a variational model generates from codes drawn from N(0, I)."""
    config = finished_run(args, parser)
    if config.model != "variational":
        parser.error(f"{args.model_dir} holds a {config.model} model: only a variational "
                     "model's codes follow N(0, I); train one with --model variational")
    if args.n < 1:
        parser.error("--n must be at least 1")
    out = args.out or os.path.join(args.model_dir, "samples.png")
    from .run.embeddings import generate
    from .images import grid_rows, image_grid, write_png
    from .serving.loading import load_finished_model

    images = generate(load_finished_model(args.model_dir), args.n, args.seed, config.data_format)
    write_png(out, image_grid(grid_rows(images, math.ceil(math.sqrt(args.n)))))
    print(f"Wrote {args.n} generated images to {out}")
    return 0


# --- embeddings (export_embeddings.py) ------------------------------------------------------

def embeddings_config(args) -> Config:
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
    for name in ("noise_factor", "dataset", "data_dir", "seed"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.dataset and not args.data_dir:
        config.data_dir = None
    if args.images is not None and args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    return config.validate()


def embeddings(args, parser) -> int:
    """The original's test_mnist_autoencoder.py, plus the projector."""
    try:
        config = embeddings_config(args)
    except ConfigError as e:
        parser.error(str(e))
    from .run import embeddings as lib
    from .data import sources
    from .serving.loading import load_finished_codec, load_saved_model

    saved_model = is_saved_model(config.model_dir)
    embedding = args.what == "embedding"
    output = args.output or os.path.join(
        config.model_dir, "projector" if embedding else "reconstructions.png")
    splits = sources.load_data(config.dataset, config.data_dir)
    if not saved_model and config.image_shape and splits.image_shape != config.image_shape:
        raise ConfigError(f"the model was trained on {config.image_shape} images, "
                          f"{splits.source} has {splits.image_shape}")
    config.image_shape = config.image_shape or splits.image_shape
    count = min(args.images or (10_000 if embedding else 10), len(splits.test))
    test = sources.Split(splits.test.images[:count], splits.test.labels[:count])
    model = (load_saved_model(config.model_dir, config.batch_size) if saved_model
             else load_finished_codec(config))
    if embedding:
        lib.export_embedding(model, test, output, noise_factor=config.noise_factor,
                             seed=config.seed, save_npy=args.save_npy, save_tsv=args.save_tsv)
    else:
        grid = lib.export_reconstruction(model, test, output,
                                         noise_factor=config.noise_factor, seed=config.seed)
        if not args.no_show and lib.display_available():
            lib.show(grid, output)
    return 0


COMMANDS = {"train": train, "export": export, "predict": predict, "evaluate": evaluate,
            "sample": sample, "embeddings": embeddings}
