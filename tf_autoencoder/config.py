"""One plain object holding every setting of a run, with validation and JSON round-trip."""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional

MODELS = ("convolutional", "fully_connected")
LOSSES = ("bce", "mse")
# --data_format accepts the TensorFlow names and the Keras names; we store the Keras one.
DATA_FORMATS = {
    "NHWC": "channels_last",
    "NCHW": "channels_first",
    "channels_last": "channels_last",
    "channels_first": "channels_first",
}
# Settings that change the weights' shapes: a model_dir trained with other values
# cannot be resumed.
ARCHITECTURE_FIELDS = ("model", "num_filters", "hidden_units", "image_shape")


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


@dataclass
class Config:
    # Model
    model: str = "convolutional"
    num_filters: list[int] = field(default_factory=lambda: [16, 8, 8])
    hidden_units: list[int] = field(default_factory=lambda: [128, 64, 32])
    data_format: str = "channels_last"
    dropout: Optional[float] = None  # keep probability, as in the original; None: no dropout
    weight_decay: float = 1e-5
    # Data
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    noise_factor: float = 0.0
    # Training
    loss: str = "bce"
    learning_rate: float = 0.001
    lr_decay_steps: int = 1000
    lr_decay_rate: float = 0.96
    batch_size: int = 256
    epochs: int = 50
    seed: Optional[int] = None
    # Output
    model_dir: str = "mnist_training"
    save_images: Optional[str] = None
    embedding_images: int = 10_000  # test images whose codes the projector shows; 0: none
    # Filled in when the data is loaded: what a run actually trained on.
    image_shape: Optional[list[int]] = None  # [H, W, C]
    data_source: Optional[str] = None

    def validate(self) -> "Config":
        """Normalises aliases and raises ConfigError for the first invalid setting."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}: use one of {', '.join(MODELS)}")
        if self.data_format not in DATA_FORMATS:
            raise ConfigError(
                f"unknown data_format {self.data_format!r}: use NHWC or NCHW "
                "(or channels_last / channels_first)")
        self.data_format = DATA_FORMATS[self.data_format]
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}: use bce (sigmoid cross-entropy) or mse")
        _check_sizes("num_filters", self.num_filters)
        _check_sizes("hidden_units", self.hidden_units)
        if self.dropout is not None and not 0 < self.dropout <= 1:
            raise ConfigError(
                f"dropout must be a keep probability in (0, 1], got {self.dropout}")
        checks = [
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.noise_factor >= 0, "noise_factor must be >= 0"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.embedding_images >= 0, "embedding_images must be >= 0 (0: no projector)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    def architecture(self) -> dict:
        """The settings that determine the weights' shapes."""
        arch = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
        # Only the list that the chosen model uses matters.
        arch.pop("hidden_units" if self.model == "convolutional" else "num_filters")
        return arch

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str) -> "Config":
        with open(path) as f:
            return cls.from_json(f.read())

    def save(self, path: str) -> None:
        """Writes atomically: a crash never leaves a half-written config.json."""
        write_text_atomic(path, self.to_json() + "\n")


def _check_sizes(name: str, sizes) -> None:
    if not sizes:
        raise ConfigError(f"{name} is empty: give at least one size, e.g. --{name} 16,8,8")
    bad = [s for s in sizes if not isinstance(s, int) or s < 1]
    if bad:
        raise ConfigError(f"{name} must be positive integers, got {list(sizes)}")


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
