"""What a run writes into its model_dir, and the checks made before anything is written.

model_dir/
  config.json          the full resolved configuration (what data was actually used, too)
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
                       with model.tflite and <signature>.onnx beside them on request
  evaluation.json      `tf-autoencoder evaluate`: image and code quality on clean inputs
  samples.png          `tf-autoencoder sample` without --out: images a VAE generates
  reconstructions.png  export_embeddings.py --what reconstruction without --output
  .lock                the lock a run holds while it trains, an export while it reads (files.py)
"""
from __future__ import annotations

import os
import shutil

from .config import Config, ConfigError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "model.keras"
TEST_METRICS = "test_metrics.json"
HISTORY = "history.csv"
EXPORT_DIR = "export"
SAVED_MODEL_FILE = "saved_model.pb"
# What `export --format` can write into a version (the SavedModel always), and the files.
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_FILE = "model.tflite"
SIGNATURE_NAMES = ("serving_default", "encode", "decode")
ONNX_FILES = {signature: f"{signature}.onnx" for signature in SIGNATURE_NAMES}
EVALUATION = "evaluation.json"
LATENT_2D = "latent_2d.png"  # a two-value code, drawn (latent_2d.py)
# What --overwrite removes: only what a run writes, never other files of the user's.
RUN_OUTPUTS = (CONFIG_FILE, CHECKPOINT_DIR, FINAL_MODEL, TEST_METRICS, HISTORY, EVALUATION,
               LATENT_2D, "train", "validation", "projector", EXPORT_DIR)
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard logs in model_dir itself


def check_model_dir_path(model_dir: str) -> None:
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError(f"model_dir {model_dir} is a file: give a directory path")


def prepare_model_dir(config: Config, overwrite: bool = False) -> Config | None:
    """Refuses a model_dir that is a file or holds another architecture (unless overwrite,
    which deletes the earlier run's outputs). Returns the configuration of the run being
    resumed, if any. `config.image_shape` must be set.
    """
    model_dir = config.model_dir
    check_model_dir_path(model_dir)
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        return None
    if overwrite:
        events = [name for name in os.listdir(model_dir) if name.startswith(EVENT_FILE_PREFIX)]
        for name in RUN_OUTPUTS + tuple(events):
            path = os.path.join(model_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
        return None
    try:
        previous = Config.load(config_path)
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{config_path} cannot be read ({e}): pass --overwrite to start "
                          "afresh or use another --model_dir") from None
    if previous.architecture() != config.architecture():
        raise ConfigError(
            f"model_dir {model_dir} holds a different model {previous.architecture()}, "
            f"not {config.architecture()}: use another --model_dir, or --overwrite to replace it")
    return previous


def export_versions(export_base: str) -> list[int]:
    """The integer-named entries of `export_base`, ascending: the versions TF Serving sees.
    Temporary exports (".tmp-export-...") are not versions."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base) if name.isdigit())


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def find_model(path: str) -> str:
    """find_saved_model's answer, or `path` itself when it is a .tflite or .onnx file."""
    if os.path.isfile(path):
        if path.endswith((".tflite", ".onnx")):
            return path
        raise ConfigError(f"{path} is a file but neither a .tflite nor an .onnx model: give one "
                          "of those, a model_dir, its export/ folder or one export/<version>/ "
                          "folder")
    return find_saved_model(path)


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
    """The configuration of the finished run in `model_dir` (one that saved its final
    model); ConfigError if there is none."""
    config_path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isdir(model_dir):
        raise ConfigError(f"model_dir {model_dir} does not exist: give the --model_dir of a run")
    missing = [name for name in (CONFIG_FILE, FINAL_MODEL)
               if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise ConfigError(f"{model_dir} holds no finished run (no {' and no '.join(missing)}): "
                          f"train one with train.py --model_dir {model_dir}")
    try:
        return Config.load(config_path).validate()
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{config_path} cannot be read ({e})") from None
