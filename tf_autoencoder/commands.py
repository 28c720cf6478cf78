"""What each command does once cli.py has parsed its arguments.

Every command checks what it can before TensorFlow loads (seconds), ends bad input with
one line and exit status 2 and failures with one line and exit status 1, and writes
nothing it cannot finish (see files.py). Heavy modules are imported inside the
commands, after those checks.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import signal
import sys
import threading
import time

from . import image_defaults
from .config import Config, RunFacts
from .errors import ConfigError, Interrupted
from .pause import pause_point
from .model_dir import CONFIG_FILE, EVALUATION, THRESHOLD, is_saved_model, load_finished_run
from .serving.formats import find_model
from .words import images_per_second, plural


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return COMMANDS[args.command](args, parser)


# --- train -------------------------------------------------------------------------------

def config_from_args(args: argparse.Namespace) -> Config:
    """The settings as the user gave them (defaults filled in)."""
    return Config(**{declared.name: getattr(args, declared.name)
                     for declared in dataclasses.fields(Config)
                     if declared.metadata["flag"].on_command_line})


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
    """Trains (or resumes) a run, in order: validate the settings, read the run already in
    model_dir, open the data, check the model fits the data and the run, lock and
    prepare model_dir, train. Everything that can refuse does so before anything is
    written."""
    try:
        with CtrlCBeforeTraining() as ctrl_c:
            return _train(args, parser, ctrl_c)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM outside the training loop
        signum = getattr(interrupt, "signum", signal.SIGINT)
        raise Interrupted(f"{'interrupted' if signum == signal.SIGINT else 'terminated (SIGTERM)'}"
                          "; rerun the same command to resume from the last saved "
                          "checkpoint", signum) from None


def _train(args, parser, ctrl_c: CtrlCBeforeTraining) -> int:
    from .model_dir import check_folder, check_model_dir_path, read_run

    try:
        settings = config_from_args(args).validate()
        check_model_dir_path(settings.model_dir)
        if settings.save_images is not None:
            check_folder("--save_images", settings.save_images)
        from .run.distribute import read_tf_config

        role = read_tf_config() if settings.distribute == "multi_worker" else None
    except ConfigError as e:
        parser.error(str(e))
    previous = None if args.overwrite else read_run(settings.model_dir)
    try:
        check_outputs_spare_data(settings, previous, args.overwrite)
    except ConfigError as e:
        parser.error(str(e))
    strategy = StrategyOnce(settings)
    splits = open_data(settings, previous, strategy.set_up)
    facts = run_facts(settings, previous, splits, given_settings(settings, args))
    config = settings.resolved(facts)
    config.check_data(len(splits.train))
    from .model_dir import check_same_model, clear_run

    check_same_model(config, previous)
    check_same_data(settings, previous, splits)
    strategy.set_up()
    from .files import ModelDirLock

    chief = role is None or role.is_chief  # only the chief writes model_dir
    # One run per model_dir, until this process ends.
    with ModelDirLock(settings.model_dir, "starting another run there", enabled=chief):
        if args.overwrite and chief:
            clear_run(settings.model_dir)
        elif chief:  # again, now that no other run can start there
            check_same_model(config, read_run(settings.model_dir))
        print(f"Data: {splits.source}: {len(splits.train):,} train / {len(splits.validation):,} "
              f"validation / {plural(len(splits.test), 'test image')} of "
              f"{'x'.join(map(str, splits.image_shape))}")
        if splits.normal_classes is not None:
            from .data.sources import describe_classes

            print(f"Normal classes: {describe_classes(splits.normal_classes, splits.class_names)}"
                  " (training and validation keep only these; the test split keeps every class,"
                  " scored as normal or anomalous)")
        if facts.chosen:
            print(image_defaults.describe(facts.chosen, facts.chosen_because,
                                          splits.image_shape, len(splits.train)))
        if splits.name == "folder":
            warning = image_defaults.too_few_updates(config.batch_size, config.epochs,
                                                     len(splits.train))
            if warning:
                print(warning)
        if facts.precision == "mixed_bfloat16":
            print("Precision: mixed_bfloat16 (bfloat16 compute, float32 weights); "
                  "--precision float32 for float32 throughout")
        from .run.training import train as train_run

        if ctrl_c.seen:  # a Ctrl-C that an import swallowed
            raise KeyboardInterrupt
        from .data.damage import check_never_read, naming_damaged_files

        check_never_read(splits, config.batch_size, config.seed, range(config.epochs))
        with naming_damaged_files(splits, settings.model_dir):
            train_run(settings, facts, splits, strategy=strategy.strategy)
    return 0


def check_outputs_spare_data(settings: Config, previous, overwrite: bool) -> None:
    """ConfigError if the run would write into the data it reads (model_dir or
    --save_images inside --data_dir: their PNGs would be read as images next time; a
    cache folder inside it is tagged and left out, but not the data folder itself), or
    --overwrite would delete the data or the cache (inside what it clears); checks that
    the --cache folder can be written before the images are decoded into it."""
    from .files import check_writable, same_or_inside
    from .model_dir import RUN_OUTPUTS

    data_dir = settings.data_dir or (previous[0].data_dir if previous and not settings.dataset
                                     else None)
    cache = settings.cache if settings.cache not in (None, "memory", "none") else None
    if data_dir:
        for flag, path in (("model_dir", settings.model_dir),
                           ("--save_images", settings.save_images), ("--cache", cache)):
            inside = path is not None and (
                same_or_inside(path, data_dir) if flag != "--cache"
                else os.path.realpath(path) == os.path.realpath(data_dir))
            if inside:
                raise ConfigError(f"{flag} {path} is inside --data_dir {data_dir}: what the "
                                  "run writes there would be read as images next time; give "
                                  "a folder outside the data")
    if overwrite:
        for name in RUN_OUTPUTS:
            cleared = os.path.join(settings.model_dir, name)
            for flag, path in (("--data_dir", data_dir), ("--cache", cache)):
                if path and os.path.exists(cleared) and same_or_inside(path, cleared):
                    raise ConfigError(f"--overwrite would delete {cleared}, which holds "
                                      f"{flag} {path}: move it, or use another --model_dir")
    if cache:
        if os.path.exists(cache) and not os.path.isdir(cache):
            raise ConfigError(f"--cache {cache} is a file: give a folder (created if missing)")
        check_writable("--cache", cache)
        if data_dir and same_or_inside(cache, data_dir):
            from .data.cache import tag_folder

            tag_folder(cache)  # before the data is listed, which then leaves it out


class StrategyOnce:
    """The tf.distribute strategy of --distribute, made once, before TensorFlow runs
    anything (devices are fixed from then on); None for one device, so that TensorFlow
    loads only when training starts."""

    def __init__(self, settings: Config):
        self.settings = settings
        self.strategy = None

    def set_up(self) -> None:
        if self.settings.distribute != "none" and self.strategy is None:
            from .run.distribute import describe, make_strategy

            self.strategy = make_strategy(self.settings)
            print(f"Distribute: {describe(self.strategy)}")


def open_data(settings: Config, previous, before_tensorflow):
    """The data to train on: what --dataset / --data_dir name; without either, the data
    the run in model_dir trained on, else MNIST (the sample when MNIST cannot be
    downloaded)."""
    from .data import sources

    named = settings.dataset is not None or settings.data_dir is not None
    dataset, data_dir = settings.dataset, settings.data_dir
    if previous and not named:
        dataset, data_dir = previous[1].dataset, previous[0].data_dir
    splits = sources.load_data(dataset or "mnist", data_dir,
                               fallback_to_sample=dataset is None and not data_dir,
                               before_tensorflow=before_tensorflow,
                               image_size=settings.image_size, channels=settings.channels,
                               skip_bad_images=settings.skip_bad_images,
                               max_pixels=settings.max_pixels)
    # IDX files and the sample are arrays in memory, read as they are; a TFDS dataset is
    # streamed, converted and cached as a folder's images are, but has no files to skip.
    streamed = splits.name not in ("idx", sources.SAMPLE)
    either = "a folder of images or a TFDS dataset"
    for name, applies in (("image_size", either), ("channels", either), ("cache", either),
                          ("skip_bad_images", "a folder of images")):
        fits = splits.name == "folder" or (streamed and applies == either)
        if getattr(settings, name) and not fits:
            raise ConfigError(f"--{name} applies to {applies}, not {splits.source}")
    from .data.cache import NEVER, choose_cache

    cache = None  # IDX files and the sample: arrays already
    if streamed:
        cache, why = choose_cache(splits, settings.cache)
        print(why)
    if settings.skip_bad_images or cache not in (None, NEVER):
        before_tensorflow()  # decoding runs TensorFlow
    splits = prepared(splits, settings, cache)
    return sources.select_normal(splits, sources.resolve_classes(settings.normal_classes, splits))


def prepared(splits, config: Config, cache: str | None):
    """The splits without the images --skip_bad_images drops from a folder, cached as
    `cache` (a --cache value) says (each image decoded once for either)."""
    if config.skip_bad_images and splits.name == "folder":
        from .data.folder import drop_bad_files

        splits = drop_bad_files(splits)
    if not cache:
        return splits
    from .data.cache import cache_splits
    from .data.damage import naming_damaged_files

    with naming_damaged_files(splits):
        return dataclasses.replace(cache_splits(splits, cache), cache=cache)


def check_same_data(settings: Config, previous, splits) -> None:
    """Refuses to resume a run on data other than its own: its model learnt from that."""
    from .data import sources

    if previous and previous[1].data_source and splits.source != previous[1].data_source:
        raise ConfigError(
            f"model_dir {settings.model_dir} was trained on {previous[1].data_source}, not "
            f"{splits.source}: resume without --dataset/--data_dir to continue on its data, "
            "or use another --model_dir (--overwrite replaces the run)")
    if previous and previous[1].split_sizes is not None and (
            previous[1].normal_classes != splits.normal_classes):
        def shown(classes):
            return sources.describe_classes(classes, splits.class_names) if classes \
                else "all classes"
        raise ConfigError(
            f"model_dir {settings.model_dir} was trained on {shown(previous[1].normal_classes)}, "
            f"not {shown(splits.normal_classes)}: give the same --normal_classes to resume, "
            "or use another --model_dir (--overwrite replaces the run)")


def chosen_settings(previous, splits, given) -> tuple[dict, list[str]]:
    """The settings chosen for a folder's images where the command line gave none
    (`given`): a resumed run keeps its own choice (none for a run from before choices),
    else image_defaults chooses from the images."""
    if splits.name != "folder":
        return {}, []
    if previous:
        chosen = previous[1].chosen or {}
        return ({name: value for name, value in chosen.items() if name not in given},
                previous[1].chosen_because or [])
    return image_defaults.choose(splits.image_shape, len(splits.train), given)


def given_settings(settings: Config, args) -> dict:
    """The settings the command line gave: {name: value}."""
    return {name: getattr(settings, name) for name in getattr(args, "given", ())}


def run_facts(settings: Config, previous, splits, given=None) -> RunFacts:
    """What this run trains with beyond its settings: the data's image shape and name,
    the seed (given, the resumed run's, or drawn), the precision `auto` picks, and the
    settings chosen for a folder's images where the command line (`given`) left them."""
    from .model.precision import resolve_precision

    seed = settings.seed
    if seed is None and previous:
        seed = previous[1].seed
        if seed is None:
            raise ConfigError(f"model_dir {settings.model_dir} records no seed: give --seed "
                              "(the one it trained with), or --overwrite to start afresh")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    # CPU replicas compute on the CPU whatever GPUs there are.
    precision = resolve_precision(settings.precision,
                                  on_cpu=bool(settings.cpu_replicas) or None)
    facts = RunFacts(image_shape=list(splits.image_shape), dataset=splits.name,
                     data_source=splits.source, seed=seed, precision=precision,
                     normal_classes=splits.normal_classes,
                     split_sizes={name: len(getattr(splits, name))
                                  for name in ("train", "validation", "test")},
                     class_names=splits.class_names, cache=splits.cache)
    chosen, because = chosen_settings(previous, splits, given or {})
    if chosen:
        facts.chosen, facts.chosen_because = chosen, because
    facts.architecture = settings.resolved(facts).architecture()
    return facts


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
    from .files import check_writable
    from .model_dir import EXPORT_DIR, FINAL_MODEL, check_folder

    try:
        # Each format's file is about the size of the weights in model.keras.
        check_writable("to export directory",
                       args.export_dir or os.path.join(args.model_dir, EXPORT_DIR),
                       os.path.getsize(os.path.join(args.model_dir, FINAL_MODEL))
                       * (1 + len(formats)))
        if args.export_dir is not None:
            check_folder("--export_dir", args.export_dir)
    except ConfigError as e:
        parser.error(str(e))
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
    for name in formats:  # the files each asked-for format added beside the SavedModel
        if name != lib.SAVED_MODEL.name:
            for file in lib.FORMATS[name].files:
                print(f"Wrote {os.path.join(path, file)}")
    return 0


def predict(args, parser) -> int:
    """Reconstructs and scores image files; exit 1 if any file failed."""
    try:
        model_path = find_model(args.model)
    except ConfigError as e:
        parser.error(str(e))
    from .files import check_writable
    from .model_dir import check_folder

    # Reconstruction PNGs: where --output_dir says; by default for files named one by
    # one (as before folders were taken), not for the images of a folder, often thousands.
    output_dir = args.output_dir
    if output_dir is None and not args.no_reconstructions and not any(
            os.path.isdir(path) for path in args.images):
        output_dir = "reconstructions"
    try:
        if args.no_reconstructions and args.output_dir is not None:
            raise ConfigError("--no_reconstructions and --output_dir disagree: give one")
        if output_dir is not None:
            check_folder("--output_dir", output_dir)
        if args.maps is not None:
            check_folder("--maps", args.maps)
        if args.csv is not None:
            if os.path.isdir(args.csv):
                raise ConfigError(f"--csv {args.csv} is a directory: give a file path")
            check_writable("--csv", args.csv)  # named as given, not by its folder
            check_folder("the folder of --csv", os.path.dirname(os.path.abspath(args.csv)))
            check_not_read("--csv", args.csv, model_path, args.images)
        if args.max_pixels < 1:
            raise ConfigError(f"--max_pixels must be >= 1, got {args.max_pixels}")
    except ConfigError as e:
        parser.error(str(e))
    from .serving.predict import predict_files

    def error(message):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)

    failed = predict_files(model_path, args.images, output_dir, error=error,
                           max_pixels=args.max_pixels, csv_path=args.csv, maps_dir=args.maps,
                           tiles=args.tiles)
    return 1 if failed else 0


def check_not_read(flag: str, output: str, model_path: str, images: list[str]) -> None:
    """ConfigError if `output` is a file predict reads: the model (or a file inside a
    SavedModel), one of the images, or an image file under one of the folders given;
    or a record of the run the model was exported from (its model.keras, ...)."""
    from .data.folder import IMAGE_EXTENSIONS
    from .files import same_or_inside
    from .model_dir import check_not_run_file

    # A run's export is MODEL_DIR/export/<version>.
    run_dir = os.path.join(model_path, os.pardir, os.pardir)
    if os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        check_not_run_file(flag, output, os.path.normpath(run_dir), own=None)

    read = [model_path] + [path for path in images if not os.path.isdir(path)]
    read += [folder for folder in images if os.path.isdir(folder)
             and output.lower().endswith(IMAGE_EXTENSIONS)]
    for path in read:
        if same_or_inside(output, path):
            raise ConfigError(f"{flag} {output} is one of the files this command reads "
                              f"({path}): writing it would destroy it; give another path")


# --- evaluate, sample ----------------------------------------------------------------------

def run_data(config: Config):
    """The data a finished run trained on, read as it read it (a folder's image size,
    channels, pixel limit, skipped images and cache)."""
    from .data import sources

    splits = sources.load_data(config.dataset or "mnist", config.data_dir,
                               image_size=config.image_size, channels=config.channels,
                               max_pixels=config.max_pixels,
                               skip_bad_images=config.skip_bad_images)
    return prepared(splits, config, config.cache)


def check_same_classes(model_dir: str, splits) -> None:
    """Refuses data whose classes are not those the run trained on: a class folder added
    or renamed since would shift the labels that normal_classes and the report use."""
    from .model_dir import CONFIG_FILE, RUN_FACTS

    trained = RunFacts.load(model_dir, CONFIG_FILE, RUN_FACTS).class_names
    if trained is not None and splits.class_names != trained:
        raise ConfigError(f"{splits.source} does not hold the classes the run in {model_dir} "
                        f"trained on ({', '.join(trained)}): restore its class folders as "
                        "they were, or train a new run on these")


def evaluate(args, parser) -> int:
    """Image and code quality of a finished run: a table, and MODEL_DIR/evaluation.json."""
    config = finished_run(args, parser)
    if args.probe_samples is not None and args.probe_samples < 2:
        parser.error("--probe_samples must be at least 2")
    if args.map_sigma is not None and not args.map_sigma >= 0:
        parser.error(f"--map_sigma must be 0 (no smoothing) or more, got {args.map_sigma:g}")
    # The maps scored against an MVTec AD category's masks: the run's, which its export
    # serves, unless asked for others.
    map_kind = args.map or config.anomaly_map
    map_sigma = config.anomaly_map_sigma if args.map_sigma is None else args.map_sigma
    from .files import check_writable

    # evaluation.json and threshold.json go there, after minutes of work.
    check_writable("model_dir", args.model_dir)
    from .data import sources

    splits = run_data(config)
    check_same_classes(args.model_dir, splits)
    splits = sources.select_normal(splits, config.normal_classes)  # label numbers already
    from .data.damage import naming_damaged_files
    from .run.evaluation import evaluate_run, format_table

    pause_point("evaluate")
    said = []  # the threshold's calibration, said after the table it belongs under
    started = time.perf_counter()
    with naming_damaged_files(splits):
        report = evaluate_run(args.model_dir, config, splits, probe_samples=args.probe_samples,
                              log=said.append, map_kind=map_kind, map_sigma=map_sigma)
    print(format_table(report))
    for line in said:
        print(line)
    written = [os.path.join(args.model_dir, THRESHOLD), os.path.join(args.model_dir, EVALUATION)]
    if "anomaly" in report:
        written += [report["anomaly"][name] for name in ("plot", "extremes")
                    if name in report["anomaly"]]
    if "figure" in report.get("localisation", {}):
        written.append(report["localisation"]["figure"])
    if "latent_2d" in report:
        written.append(report["latent_2d"])
    for path in written:
        print(f"Wrote {path}")
    seconds = time.perf_counter() - started
    counts = (report["test_images"], report["probe_train_images"], len(splits.validation))
    print(f"Evaluated {images_per_second(sum(counts), seconds)}: {counts[0]:,} test, "
          f"{counts[1]:,} training (the probes'), {counts[2]:,} validation (the threshold's)")
    return 0


def sample(args, parser) -> int:
    """A PNG grid of images a variational model generates from codes drawn from N(0, I)."""
    config = finished_run(args, parser)
    if config.model != "variational":
        parser.error(f"{args.model_dir} holds a {config.model} model: only a variational "
                     "model's codes follow N(0, I); train one with --model variational")
    if args.n < 1:
        parser.error("--n must be at least 1")
    from .memory import check_fits

    # The images as float32 and the grid as bytes, each held whole at once.
    check_fits(f"--n {args.n} images", args.n * math.prod(config.image_shape) * (4 + 4 + 1),
               "lower --n")
    out = args.out or os.path.join(args.model_dir, "samples.png")
    try:
        from .files import check_writable
        from .model_dir import check_folder, check_not_run_file

        if os.path.isdir(out):
            raise ConfigError(f"--out {out} is a directory: give a PNG file path")
        check_not_run_file("--out", out, args.model_dir, own="samples.png")
        check_writable("--out", out)  # named as given, not by its folder
        check_folder("the folder of --out", os.path.dirname(os.path.abspath(out)))
    except ConfigError as e:
        parser.error(str(e))
    from .run.embeddings import generate
    from .images import grid_rows, image_grid, write_png
    from .serving.loading import load_finished_model

    images = generate(load_finished_model(args.model_dir), args.n, args.seed, config.data_format)
    write_png(out, image_grid(grid_rows(images, math.ceil(math.sqrt(args.n)))))
    print(f"Wrote {plural(args.n, 'generated image')} to {out}")
    return 0


# --- embeddings (export_embeddings.py) ------------------------------------------------------

def embeddings_config(args) -> tuple[Config, bool]:
    """The settings the codes are made with: the run's (a SavedModel's run is two levels
    up, if there), with the flags given on top; and whether args.model_dir is a
    SavedModel. Raises ConfigError for bad input."""
    from .files import check_writable, same_or_inside
    from .model_dir import read_run

    path = args.model_dir
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: give a training run's model_dir or a SavedModel")
    saved_model = is_saved_model(path)
    run_dir = os.path.join(path, os.pardir, os.pardir) if saved_model else path
    run = read_run(run_dir)
    if run is None and not saved_model:
        raise ConfigError(f"{path} has no {CONFIG_FILE}: give the model_dir of a training run "
                          "or a SavedModel directory")
    if saved_model and not args.output:
        raise ConfigError("give --output when reading a SavedModel")
    # A run's own folder, wherever it was trained from; a SavedModel's codes need none.
    config = run[0].resolved(run[1]) if run else Config(dataset="mnist")
    if not saved_model:
        config = dataclasses.replace(config, model_dir=path)
    given = {name: getattr(args, name) for name in ("noise_factor", "dataset", "data_dir", "seed")
             if getattr(args, name) is not None}
    if args.dataset and not args.data_dir:
        given["data_dir"] = None
    if args.images is not None and args.images < 1:
        raise ConfigError(f"--images must be >= 1, got {args.images}")
    if args.what == "reconstruction" and args.output and os.path.isdir(args.output):
        raise ConfigError(f"--output {args.output} is a directory: give a PNG file path")
    if not args.output:  # the projector or the picture goes into model_dir
        check_writable("model_dir", path)
    else:
        from .model_dir import check_not_run_file

        check_not_run_file("--output", args.output, run_dir, own="projector"
                           if args.what == "embedding" else "reconstructions.png")
        if saved_model and same_or_inside(args.output, path):
            raise ConfigError(f"--output {args.output} is inside the SavedModel {path}, which "
                              "this command reads: give another path")
        check_writable("--output", args.output)
    return dataclasses.replace(config, **given).validate(), saved_model


def embeddings(args, parser) -> int:
    """The original's test_mnist_autoencoder.py, plus the projector."""
    try:
        config, saved_model = embeddings_config(args)
    except ConfigError as e:
        parser.error(str(e))
    from .run import embeddings as lib
    from .data import sources
    from .serving.loading import load_finished_codec, load_saved_model

    embedding = args.what == "embedding"
    output = args.output or os.path.join(
        args.model_dir, "projector" if embedding else "reconstructions.png")
    splits = run_data(config)
    if not saved_model and splits.image_shape != config.image_shape:
        raise ConfigError(f"the model was trained on {config.image_shape} images, "
                          f"{splits.source} has {splits.image_shape}")
    count = min(args.images or (10_000 if embedding else 10), len(splits.test))
    from .data.damage import naming_damaged_files

    model = (load_saved_model(args.model_dir, config.batch_size) if saved_model
             else load_finished_codec(config))
    started = time.perf_counter()  # the test images read, then encoded or reconstructed
    with naming_damaged_files(splits):
        test = sources.Split(splits.test.images[:count], splits.test.labels[:count])
    if embedding:
        lib.export_embedding(model, test, output, noise_factor=config.noise_factor,
                             seed=config.seed, save_npy=args.save_npy, save_tsv=args.save_tsv,
                             class_names=splits.class_names)
    else:
        grid = lib.export_reconstruction(model, test, output,
                                         noise_factor=config.noise_factor, seed=config.seed)
    print(f"{'Encoded' if embedding else 'Reconstructed'} "
          f"{images_per_second(count, time.perf_counter() - started)}")
    if not embedding and not args.no_show and lib.display_available():
        lib.show(grid, output)
    return 0


COMMANDS = {"train": train, "export": export, "predict": predict, "evaluate": evaluate,
            "sample": sample, "embeddings": embeddings}
