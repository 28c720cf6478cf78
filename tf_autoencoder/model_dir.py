"""What a run writes into its model_dir, and the checks made before anything is written.

model_dir/
  config.json        the full resolved configuration (what data was actually used, too)
  checkpoints/       one TF checkpoint per epoch (weights, optimizer, epoch): the resume point
  train/ validation/ TensorBoard logs per epoch
  events.out.*       TensorBoard: the hyperparameters and the final test metrics
  projector/         latent codes of test images for TensorBoard's projector
  history.csv        loss and metrics per epoch, training and validation
  model.keras        the final model
  test_metrics.json  loss, RMSE, BCE, MSE on the test split
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
# What --overwrite removes: only what a run writes, never other files of the user's.
RUN_OUTPUTS = (CONFIG_FILE, CHECKPOINT_DIR, FINAL_MODEL, TEST_METRICS, HISTORY, "train",
               "validation", "projector")
EVENT_FILE_PREFIX = "events.out.tfevents."  # TensorBoard logs in model_dir itself


def prepare_model_dir(config: Config, overwrite: bool = False) -> Config | None:
    """Refuses a model_dir that is a file or holds another architecture (unless overwrite,
    which deletes the earlier run's outputs). Returns the configuration of the run being
    resumed, if any. `config.image_shape` must be set.
    """
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError(f"model_dir {model_dir} is a file: give a directory path")
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
