"""What a run writes into its model_dir, and the checks made before anything is written.

model_dir/
  config.json          the settings, as given (defaults filled in)
  run.json             what the run found out: image shape, data read, seed, precision,
                       the architecture it built
  checkpoints/         one TF checkpoint per epoch (weights, optimizer, epoch): the resume point
  train/, validation/  TensorBoard logs per epoch
  events.out.*         TensorBoard: the hyperparameters, the metrics HParams shows, and the
                       final test metrics
  projector/           latent codes of test images for TensorBoard's projector (training,
                       and export_embeddings.py --what embedding)
  latent_2d.png        with a two-value code (--code_size 2): the codes drawn (training, evaluate)
  history.csv          loss and metrics per epoch, training and validation
  model.keras          the final model
  test_metrics.json    loss, RMSE, BCE, MSE on the test split with the run's input noise, and
                       what they score ("inputs", "noise_factor", "metrics")
  export/              <version>/: SavedModels for serving (1, 2, ... as TF Serving expects),
                       with the other formats beside them on request (serving/formats.py)
  evaluation.json      `tf-autoencoder evaluate`: image and code quality on clean inputs
  samples.png          `tf-autoencoder sample` without --out: images a VAE generates
  reconstructions.png  export_embeddings.py --what reconstruction without --output
  threshold.json       the anomaly threshold calibrated on the validation images (its score
                       and false-positive rate): the export's `score` signature carries it
  code_gaussian.npz    --anomaly_score code: the mean and precision of the normal training
                       images' codes, which the score measures distances with (and carries)
  anomaly.png, anomaly_extremes.png  `evaluate` with --normal_classes: the ROC curve and
                       score histograms; the most and least anomalous test images
  localisation_worst.png  `evaluate` on an MVTec AD category: the defective test images
                       whose anomaly maps find their defect worst, with masks and maps
  .lock                the lock a run holds while it trains, an export while it reads (files.py)
"""
from __future__ import annotations

import json
import os
import shutil

from .config import Config, RunFacts
from .errors import ConfigError
from .files import check_writable, same_or_inside

CONFIG_FILE = "config.json"
RUN_FACTS = "run.json"  # what the run found out: image shape, data, seed, precision
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "model.keras"
TEST_METRICS = "test_metrics.json"
HISTORY = "history.csv"
EXPORT_DIR = "export"
SAVED_MODEL_FILE = "saved_model.pb"
EVALUATION = "evaluation.json"
LATENT_2D = "latent_2d.png"  # a two-value code, drawn (latent_2d.py)
THRESHOLD = "threshold.json"  # the calibrated anomaly threshold (run/anomaly.py)
CODE_GAUSSIAN = "code_gaussian.npz"  # --anomaly_score code: the codes' Gaussian (run/anomaly.py)
ANOMALY_PLOT = "anomaly.png"  # evaluate: ROC curve and score histograms
ANOMALY_EXTREMES = "anomaly_extremes.png"  # evaluate: most and least anomalous test images
LOCALISATION_WORST = "localisation_worst.png"  # evaluate, MVTec AD layout: the worst maps
# What --overwrite removes: only what a run writes, never other files of the user's.
RUN_OUTPUTS = (CONFIG_FILE, RUN_FACTS, CHECKPOINT_DIR, FINAL_MODEL, TEST_METRICS, HISTORY,
               EVALUATION, LATENT_2D, THRESHOLD, CODE_GAUSSIAN, ANOMALY_PLOT, ANOMALY_EXTREMES,
               LOCALISATION_WORST,
               "samples.png", "reconstructions.png", "train", "validation", "projector",
               EXPORT_DIR)
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard logs in model_dir itself


def check_folder(flag: str, path: str) -> None:
    """Refuses a folder path that cannot be one (empty, a file, a broken symbolic link or
    a loop of them) or that cannot be written to (files.check_writable), before anything
    is written."""
    if not path:
        raise ConfigError(f"{flag} is empty: give a directory path")
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"{flag} {path} is a symbolic link to nothing (or a loop of "
                          "links): give a directory path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a file: give a directory path")
    check_writable(flag, path)


def check_not_run_file(flag: str, path: str, model_dir: str, own: str | None) -> None:
    """Refuses an output `path` that would replace one of the records of the run in
    `model_dir` (its model, settings, checkpoints, exports...) other than `own`, the
    file the command writes there by default."""
    for name in RUN_OUTPUTS:
        record = os.path.join(model_dir, name)
        if name != own and os.path.exists(record) and same_or_inside(path, record):
            raise ConfigError(f"{flag} {path} would overwrite {record}, a record of the run: "
                              "give another path")


def check_model_dir_path(model_dir: str) -> None:
    check_folder("model_dir", model_dir)


def read_run(model_dir: str) -> tuple[Config, RunFacts] | None:
    """The settings and facts of the run in `model_dir`, or None if it holds none.
    ConfigError if they cannot be read."""
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        return None
    try:
        settings = Config.load(config_path)
        facts = RunFacts.load(model_dir, CONFIG_FILE, RUN_FACTS)
        facts.check_settings(settings, config_path)
        return settings, facts
    except (ConfigError, TypeError, OSError) as e:
        raise ConfigError(f"{e if isinstance(e, ConfigError) else f'{config_path}: {e}'}: "
                          "pass --overwrite to start afresh or use another --model_dir") from None


def check_same_model(config: Config, previous: tuple[Config, RunFacts] | None) -> None:
    """Refuses to resume `previous` (read_run's) with another architecture. `config` is
    resolved (its image_shape set)."""
    if previous is None:
        return
    before, now = previous[0].resolved(previous[1]).architecture(), config.architecture()
    if before != now:
        differ = ", ".join(f"{name} {before.get(name)} (now {now.get(name)})"
                           for name in sorted(set(before) | set(now))
                           if before.get(name) != now.get(name))
        raise ConfigError(
            f"model_dir {config.model_dir} holds a different model, trained with {differ}: "
            "give the same settings to resume, use another --model_dir, or --overwrite to "
            "replace it")


def clear_run(model_dir: str) -> None:
    """--overwrite: removes what an earlier run wrote, and nothing else of the user's."""
    if not os.path.isdir(model_dir):
        return
    events = [name for name in os.listdir(model_dir) if name.startswith(EVENT_FILE_PREFIX)]
    for name in RUN_OUTPUTS + tuple(events):
        path = os.path.join(model_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def export_versions(export_base: str) -> list[int]:
    """The integer-named entries of `export_base`, ascending: the versions TF Serving sees.
    Temporary exports (".tmp-export-...") are not versions."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base) if name.isdigit())


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def find_saved_model(path: str) -> str:
    """A SavedModel directory, an export base or a model_dir -> the SavedModel to load
    (the newest complete version). Raises ConfigError saying what is missing."""
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: give a model_dir, its export/ folder "
                          "or one export/<version>/ folder")
    if is_saved_model(path):
        return path
    for base in (os.path.join(path, EXPORT_DIR), path):
        complete = [v for v in export_versions(base) if is_saved_model(os.path.join(base, str(v)))]
        if complete:
            return os.path.join(base, str(complete[-1]))
    if os.path.isfile(os.path.join(path, FINAL_MODEL)):
        raise ConfigError(f"{path} has no SavedModel export yet: make one with "
                          f"`tf-autoencoder export {path}`")
    raise ConfigError(f"{path} holds neither a SavedModel ({SAVED_MODEL_FILE}) nor a model_dir "
                      f"with {EXPORT_DIR}/<version>/ folders")


def load_finished_run(model_dir: str) -> Config:
    """The configuration the finished run in `model_dir` (one that saved its final model)
    trained with: its settings resolved with its facts; ConfigError if there is none."""
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isdir(model_dir):
        raise ConfigError(f"model_dir {model_dir} does not exist: give the --model_dir of a run")
    missing = [name for name in (CONFIG_FILE, FINAL_MODEL)
               if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise ConfigError(f"{model_dir} holds no finished run (no {' and no '.join(missing)}): "
                          f"train one with train.py --model_dir {model_dir}")
    try:
        settings = Config.load(config_path).validate()
        facts = RunFacts.load(model_dir, CONFIG_FILE, RUN_FACTS)
        facts.check_settings(settings, config_path)
        return settings.resolved(facts)
    except ConfigError:
        raise
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{config_path} cannot be read ({e})") from None


def read_threshold(model_dir: str) -> float:
    """The anomaly threshold calibrated for the run in `model_dir` (threshold.json).
    ConfigError if there is none (a run from before thresholds were calibrated)."""
    path = os.path.join(model_dir, THRESHOLD)
    try:
        with open(path) as f:
            threshold = json.load(f)["threshold"]
    except FileNotFoundError:
        raise ConfigError(f"{model_dir} has no {THRESHOLD} (it was trained before anomaly "
                          f"thresholds were calibrated): run `tf-autoencoder evaluate "
                          f"{model_dir}` to calibrate one, then export") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} records no threshold ({e})") from None
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise ConfigError(f"{path} records a threshold that is not a number: {threshold!r}")
    return float(threshold)


def read_code_gaussian(model_dir: str) -> dict:
    """The Gaussian of the normal training images' codes of a run scored by --anomaly_score
    code (code_gaussian.npz): {"mean": (D,), "precision": (D, D)}, float64.
    ConfigError if there is none or it cannot be read."""
    import numpy as np

    path = os.path.join(model_dir, CODE_GAUSSIAN)
    try:
        with np.load(path) as saved:
            gaussian = {"mean": saved["mean"], "precision": saved["precision"]}
    except FileNotFoundError:
        raise ConfigError(f"{model_dir} has no {CODE_GAUSSIAN} to score codes with: run "
                          f"`tf-autoencoder evaluate {model_dir}` to fit one, then "
                          "export") from None
    except (ValueError, KeyError, OSError) as e:
        raise ConfigError(f"{path} cannot be read ({e})") from None
    size = gaussian["mean"].shape
    if len(size) != 1 or gaussian["precision"].shape != size * 2:
        raise ConfigError(f"{path} holds a mean of shape {size} and a precision of shape "
                          f"{gaussian['precision'].shape}: not a Gaussian")
    return gaussian
